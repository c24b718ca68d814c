// The Extent frame header, the one sent per extent, encoded and decoded by hand: protobufjs's generic
// fromObject/encode and decode/toObject (a Long per uint64) cost a few µs per frame, which at 4 KiB
// extents is a large share of each hop's CPU. The bytes are protobuf's, as tidemark.proto defines them
// (Frame.extent = 6; Extent fields 1..5, all varints): what protobufjs writes for these messages, and
// what it reads. Anything else (unknown fields, other wire types, unknown enum values) is left to protobufjs.
import type { CompressionName, ExtentMsg } from './messages.js';

const EXTENT_TAG = (6 << 3) | 2; // Frame.extent, length-delimited
const COMPRESSION: readonly CompressionName[] = ['NONE', 'LZ4'];
const TWO_32 = 2 ** 32;

/** Bytes of `v` (a non-negative integer, up to 2^64) as a varint. */
function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function putVarint(b: Uint8Array, at: number, v: number): number {
  while (v >= 128) {
    b[at++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  b[at++] = v;
  return at;
}

/**
 * The encoded Frame for `{ extent: e }`, as protobufjs encodes it (fields in order, zeros left out, as
 * proto3 does); null when a value is not one this encoder writes the same way (the caller uses protobufjs).
 */
export function encodeExtentFrame(e: ExtentMsg): Uint8Array | null {
  const c = COMPRESSION.indexOf(e.compression);
  if (c < 0 || !Number.isSafeInteger(e.offset) || e.offset < 0) return null;
  for (const v of [e.length, e.crc32c, e.storedLength]) if (!Number.isInteger(v) || v < 0 || v >= TWO_32) return null;
  const fields = [e.offset, e.length, e.crc32c, c, e.storedLength];
  let body = 0;
  for (const v of fields) if (v !== 0) body += 1 + varintSize(v);
  const out = new Uint8Array(1 + varintSize(body) + body);
  out[0] = EXTENT_TAG;
  let at = putVarint(out, 1, body);
  for (let f = 0; f < fields.length; f++) {
    if (fields[f] === 0) continue;
    out[at++] = (f + 1) << 3; // field f + 1, varint
    at = putVarint(out, at, fields[f]!);
  }
  return out;
}

/**
 * `{ extent, body: 'extent' }` from an encoded Frame holding an Extent and nothing else, with protobufjs's
 * values (absent fields 0 / NONE; uint32 the low 32 bits; uint64 as a Number); null for anything else.
 */
export function decodeExtentFrame(b: Uint8Array): { extent: ExtentMsg; body: 'extent' } | null {
  if (b.length < 2 || b[0] !== EXTENT_TAG) return null;
  let at = 1;
  // A varint as [low 32 bits, high 32 bits]; null when it runs past `end` or past 10 bytes.
  const varint = (end: number): [number, number] | null => {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (at >= end) return null;
      const byte = b[at++]!;
      if (i < 4) lo |= (byte & 127) << (7 * i);
      else if (i === 4) {
        lo |= (byte & 15) << 28;
        hi |= (byte & 127) >> 4;
      } else hi |= (byte & 127) << (7 * i - 32);
      if (byte < 128) return [lo >>> 0, hi >>> 0];
    }
    return null;
  };
  const len = varint(b.length);
  if (!len || len[1] !== 0 || at + len[0] !== b.length) return null;
  const e: ExtentMsg = { offset: 0, length: 0, crc32c: 0, compression: 'NONE', storedLength: 0 };
  while (at < b.length) {
    const tag = varint(b.length);
    if (!tag || tag[1] !== 0 || (tag[0] & 7) !== 0) return null;
    const v = varint(b.length);
    if (!v) return null;
    switch (tag[0] >>> 3) {
      case 1: e.offset = v[1] * TWO_32 + v[0]; break;
      case 2: e.length = v[0]; break;
      case 3: e.crc32c = v[0]; break;
      case 4: {
        const c = COMPRESSION[v[0]];
        if (c === undefined || v[1] !== 0) return null;
        e.compression = c;
        break;
      }
      case 5: e.storedLength = v[0]; break;
      default: return null;
    }
  }
  return { extent: e, body: 'extent' };
}
