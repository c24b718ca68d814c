// Extent data on its way through the pipeline: compressed once (process server), decompressed and
// verified against the source's checksum where it is written (master target).
import { crc } from '../common/checksum.js';
import { tmError, type TidemarkError } from '../common/errors.js';
import { lz4CompressAsync, lz4Decompress, lz4DecompressAsync } from '../native/lz4.js';
import type { ExtentRecord } from './hrl.js';
import { MAX_EXTENT_BYTES } from './limits.js';

/** Check raw (uncompressed) extent data against the checksum taken where it was read. */
export function verifyRaw(e: ExtentRecord, raw: Buffer, volume: string, seq: number): void {
  verifiedRaw(e, raw, raw.length === e.length ? crc(raw) : NaN, volume, seq);
}

/**
 * verifyRaw for raw bytes whose crc32c is already known from reading them (a frame's payload crc):
 * the same check without a second pass over the bytes. Returns `raw`.
 */
export function verifiedRaw(e: ExtentRecord, raw: Buffer, rawCrc: number, volume: string, seq: number): Buffer {
  if (raw.length !== e.length || rawCrc !== e.crc32c) {
    throw tmError('TM_ERR_EXTENT_CHECKSUM', `extent [${e.offset}, +${e.length}) of ${volume} seq ${seq} does not match its source checksum`, { volume, seq, offset: e.offset, length: e.length });
  }
  return raw;
}

/**
 * Keep an extent raw unless LZ4 brings it under this fraction of its size: below ~5% the saving does not
 * pay for decompressing it on the master target (and random or encrypted data never gets there).
 */
export const LZ4_KEEP_RAW_AT = 0.95;

/** The longest stored LZ4 form (u32 LE raw size + block) kept for `rawLength` raw bytes: under LZ4_KEEP_RAW_AT of it. */
export function lz4KeepLimit(rawLength: number): number {
  return Math.ceil(rawLength * LZ4_KEEP_RAW_AT) - 1;
}

/** What to store for a raw extent given its stored LZ4 form (u32 LE raw size, then the block). */
export function chooseStored(e: ExtentRecord, raw: Buffer, packed: Buffer): { record: ExtentRecord; stored: Buffer } {
  if (packed.length >= raw.length * LZ4_KEEP_RAW_AT) return { record: { ...e, compression: 'NONE', storedLength: raw.length }, stored: raw };
  return { record: { ...e, compression: 'LZ4', storedLength: packed.length }, stored: packed };
}

/** LZ4 the extent on the libuv thread pool; keep it raw when LZ4 does not pay (chooseStored). */
export async function compressExtent(e: ExtentRecord, raw: Buffer): Promise<{ record: ExtentRecord; stored: Buffer }> {
  return storedOf(e, raw, raw.length === 0 ? null : await lz4CompressAsync(raw, lz4KeepLimit(raw.length)));
}

/** The stored form given the LZ4 form lz4Compress kept under lz4KeepLimit (null: it did not pay, keep raw). */
export function storedOf(e: ExtentRecord, raw: Buffer, packed: Buffer | null): { record: ExtentRecord; stored: Buffer } {
  if (packed === null) return { record: { ...e, compression: 'NONE', storedLength: raw.length }, stored: raw };
  return { record: { ...e, compression: 'LZ4', storedLength: packed.length }, stored: packed };
}

function checkLz4Prefix(e: ExtentRecord, stored: Buffer, volume: string, seq: number): void {
  // The block's size prefix decides what the decompressor allocates: never trust it past the record,
  // nor the record past the longest extent any agent makes (a 64-byte block may claim a GiB).
  if (e.length > MAX_EXTENT_BYTES) {
    throw tmError('TM_ERR_EXTENT_BOUNDS', `extent [${e.offset}, +${e.length}) of ${volume} seq ${seq} is longer than ${MAX_EXTENT_BYTES} bytes; not decompressed`, { volume, seq, offset: e.offset, length: e.length });
  }
  if (stored.length < 4 || stored.readUInt32LE(0) !== e.length) {
    throw tmError('TM_ERR_EXTENT_CHECKSUM', `extent [${e.offset}, +${e.length}) of ${volume} seq ${seq}: LZ4 size prefix does not match the record`, { volume, seq, offset: e.offset });
  }
}

function undecompressable(e: ExtentRecord, err: unknown, volume: string, seq: number): TidemarkError {
  return tmError('TM_ERR_EXTENT_CHECKSUM', `extent [${e.offset}, +${e.length}) of ${volume} seq ${seq} does not decompress: ${(err as Error).message}`, { volume, seq, offset: e.offset });
}

/** The raw bytes of a stored extent, verified. A decompression failure is corruption too. */
export function rawData(e: ExtentRecord, stored: Buffer, volume: string, seq: number): Buffer {
  let raw = stored;
  if (e.compression === 'LZ4') {
    checkLz4Prefix(e, stored, volume, seq);
    try {
      raw = lz4Decompress(stored.subarray(4), e.length);
    } catch (err) {
      throw undecompressable(e, err, volume, seq);
    }
  }
  verifyRaw(e, raw, volume, seq);
  return raw;
}

/**
 * Extents shorter than this (uncompressed) are decompressed on the event loop: handing a small block to
 * the libuv thread pool costs more than decompressing it. Measured with lz4-napi (before native/lz4.ts) on this 2-core machine
 * (text blocks, docs/OPERATIONS.md "Compression"): 4 KiB inline ~470 MiB/s at ~1.0 CPU s/GiB, on the
 * pool (4 in flight) ~130 MiB/s at ~2.8 CPU s/GiB; 64 KiB ~240 vs ~180 MiB/s at 0.9 vs 1.7 s/GiB;
 * from 1 MiB the pool's second core wins (~455 vs ~350 MiB/s).
 */
export const DECOMPRESS_INLINE_BELOW = 64 * 1024;

/**
 * rawData with decompression of extents of DECOMPRESS_INLINE_BELOW bytes or more on the libuv thread
 * pool, so the event loop keeps receiving meanwhile; smaller ones inline (cheaper than the hand-off).
 */
export async function rawDataAsync(e: ExtentRecord, stored: Buffer, volume: string, seq: number): Promise<Buffer> {
  if (e.compression !== 'LZ4' || e.length < DECOMPRESS_INLINE_BELOW) return rawData(e, stored, volume, seq);
  checkLz4Prefix(e, stored, volume, seq);
  let raw: Buffer;
  try {
    raw = await lz4DecompressAsync(stored.subarray(4), e.length);
  } catch (err) {
    throw undecompressable(e, err, volume, seq);
  }
  verifyRaw(e, raw, volume, seq);
  return raw;
}
