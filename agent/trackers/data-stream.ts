// Turns data-mode ring records (native/datacap.ts) into journal extents, in stream (issue) order, cut at
// a request boundary: a place in the stream where every request begun has all its records.
import { crc } from '../../common/checksum.js';
import { crc32cCombine } from '../../common/crc-combine.js';
import { DC_DISCARD, DC_LAST, DC_WRITE, DC_ZEROES, type DataRecord } from '../../native/datacap.js';
import type { DirtyExtent } from './tracker.js';

/** Extents are cut at this size (as blocktrace's are). */
const MAX_EXTENT = 1024 * 1024;
const ZEROES = Buffer.alloc(MAX_EXTENT);
const zeroCrc = new Map<number, number>();

/**
 * How many of `records` form whole completions (the longest such prefix), or all of them when there is
 * no boundary and `force` (a stream that never pauses must still be sent; no point is claimed then).
 */
export function boundary(records: DataRecord[], force: boolean): { take: number; atBoundary: boolean } {
  const open = new Set<number>();
  let take = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    if (r.flags & DC_LAST) open.delete(r.seq);
    else open.add(r.seq);
    if (open.size === 0) take = i + 1;
  }
  if (take === 0 && force && records.length > 0) return { take: records.length, atBoundary: false };
  return { take, atBoundary: true };
}

export interface Slice {
  extents: DirtyExtent[];
  bytes: number;
  /** Blocks [first, end) that the records touch only in part: they are re-read (no point until then). */
  partial: Array<[number, number]>;
}

/**
 * Records, in order, as block-aligned extents; pieces of one completion that follow each other are joined.
 * The reader thread's crc of each piece (DataRecord.crc) is combined, not recomputed from the bytes.
 */
export function toExtents(records: DataRecord[], blockSize: number): Slice {
  const out: Slice = { extents: [], bytes: 0, partial: [] };
  let run: { seq: number; offset: number; parts: Buffer[]; length: number; zero: boolean; crc: number | null } | null = null;
  const flush = (): void => {
    if (!run) return;
    emit(out, run.offset, run.length, run.zero ? null : run.parts, blockSize, run.crc);
    run = null;
  };
  for (const r of records) {
    if (!(r.flags & (DC_WRITE | DC_DISCARD | DC_ZEROES)) || r.length === 0) continue;
    const zero = (r.flags & DC_WRITE) === 0;
    if (run && !zero && !run.zero && run.seq === r.seq && run.offset + run.length === r.offset && run.length + r.length <= MAX_EXTENT) {
      run.parts.push(r.data!);
      run.length += r.length;
      run.crc = run.crc !== null && r.crc !== null ? crc32cCombine(run.crc, r.crc, r.length) : null;
      continue;
    }
    flush();
    run = { seq: r.seq, offset: r.offset, parts: zero ? [] : [r.data!], length: r.length, zero, crc: zero ? null : r.crc };
  }
  flush();
  return out;
}

/**
 * The pieces of one request as one buffer: a view when they lie side by side in one take's buffer (its
 * data follows its headers, parseRecords), a copy only when they came in two takes.
 */
export function joined(parts: Buffer[]): Buffer {
  const first = parts[0]!;
  let end = first.byteOffset + first.length;
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i]!;
    if (p.buffer !== first.buffer || p.byteOffset !== end) return Buffer.concat(parts);
    end += p.length;
  }
  return parts.length === 1 ? first : Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}

/**
 * One written (parts) or zeroed (null: discard, write-zeroes; the replica reads zeroes there, as a loop
 * device or a disk with deterministic TRIM does) range as aligned extents of at most MAX_EXTENT.
 */
function emit(out: Slice, offset: number, length: number, parts: Buffer[] | null, bs: number, dataCrc: number | null): void {
  const data = parts ? joined(parts) : null;
  const first = Math.ceil(offset / bs) * bs;
  const end = Math.floor((offset + length) / bs) * bs;
  if (end <= first) {
    out.partial.push([Math.floor(offset / bs), Math.ceil((offset + length) / bs)]);
    return;
  }
  if (first > offset) out.partial.push([Math.floor(offset / bs), first / bs]);
  if (end < offset + length) out.partial.push([end / bs, Math.ceil((offset + length) / bs)]);
  for (let at = first; at < end; at += MAX_EXTENT) {
    const n = Math.min(MAX_EXTENT, end - at);
    let piece: Buffer;
    let c: number;
    if (data) {
      piece = n === data.length ? data : data.subarray(at - offset, at - offset + n);
      // The range whole, as the reader saw it (aligned, under MAX_EXTENT: a 4 KiB write): its crc is known.
      c = dataCrc !== null && n === length ? dataCrc : crc(piece);
    } else {
      piece = ZEROES.subarray(0, n);
      c = zeroCrc.get(n) ?? crc(piece);
      zeroCrc.set(n, c);
    }
    out.extents.push({ offset: at, length: n, data: piece, crc32c: c });
    out.bytes += n;
  }
}
