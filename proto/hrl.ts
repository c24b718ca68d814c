// The change journal file (.hrl), version 1: one differential of one volume. Byte layout in docs/FORMAT.md.
// The agent's journal, the process server's cache and the master target's staging area all hold these.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { readU64, writeU64 } from '../common/u64.js';
import { crc32cCombine } from '../common/crc-combine.js';
import { commitRename, TMP_SUFFIX } from '../common/durable.js';
import { tmError, wrap } from '../common/errors.js';
import { detach, withFileBytes } from './hrl-read.js';
import type { CompressionName, Consistency } from './messages.js';

export const HRL_MAGIC = 0x4c484d54; // "TMHL" little-endian
export const HRL_END_MAGIC = 0x45484d54; // "TMHE"
export const HRL_VERSION = 1;
export const FIXED_HEADER = 52;
export const EXTENT_HEADER = 28;
export const TRAILER = 24;

/** Part of a checksum resync: the replica is inconsistent from the first such differential... */
export const FLAG_RESYNC = 1;
/** ...until this one: the resync pass and the writes made during it (Step II) are all in. */
export const FLAG_RESYNC_END = 2;

const CONSISTENCY: readonly Consistency[] = ['FUZZY', 'CRASH', 'APP'];
const COMPRESSION: readonly CompressionName[] = ['NONE', 'LZ4'];

export interface DiffHeader {
  volumeId: string;
  seq: number;
  startTimeMs: number;
  endTimeMs: number;
  volumeSize: number;
  blockSize: number;
  consistency: Consistency;
  flags: number;
  tags: string[];
}

export interface ExtentRecord {
  offset: number;
  length: number;
  crc32c: number; // of the uncompressed data
  compression: CompressionName;
  storedLength: number;
}

export interface Extent extends ExtentRecord {
  data: Buffer; // stored bytes (compressed when compression is LZ4)
  /** crc32c of `data` where the holder knows it (a writer's kept extents), so a sender need not compute it. */
  storedCrc?: number;
  /**
   * A kept extent whose data is a pooled frame body (Frame.release): its one consumer calls this once
   * nothing refers to `data` any more (the master target's applier, after the group's commit).
   */
  release?: () => void;
}

export interface Diff {
  header: DiffHeader;
  extents: Extent[];
  dataBytes: number;
  extentDigest: number;
}

/** A verified differential too large to hold in memory: its extents' data stay in `file` until read. */
export interface DiffOnDisk {
  header: DiffHeader;
  /** `at`: byte position of the extent's stored data in the file. */
  extents: Array<ExtentRecord & { at: number }>;
  dataBytes: number;
  extentDigest: number;
  file: string;
}

export type StoredDiff = Diff | DiffOnDisk;

/** Bigger .hrl files are verified and read extent by extent (openHrlOnDisk), never held whole. */
export const IN_MEMORY_BYTES = 64 * 1024 * 1024;
/** A writer created with `keep` keeps its extents only up to this many stored bytes. */
export const KEEP_BYTES = IN_MEMORY_BYTES;

/** The digest the wire's DiffEnd carries: independent of compression, so every hop can check it. */
/** Scratch for digestStep: crc reads it synchronously, so one buffer serves every call. */
const digestScratch = Buffer.alloc(16);

export function digestStep(seed: number, e: ExtentRecord): number {
  writeU64(digestScratch, e.offset, 0);
  digestScratch.writeUInt32LE(e.length, 8);
  digestScratch.writeUInt32LE(e.crc32c, 12);
  return crc(digestScratch, seed);
}


export function hrlName(seq: number): string {
  return `${String(seq).padStart(16, '0')}.hrl`;
}

export function seqOfName(name: string): number | null {
  const m = /^(\d{16})\.hrl$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** Sequence numbers of the committed .hrl files in `dir`, ascending. */
export async function listDiffs(dir: string): Promise<number[]> {
  const seqs: number[] = [];
  for (const name of await fsp.readdir(dir)) {
    const s = seqOfName(name);
    if (s !== null) seqs.push(s);
  }
  return seqs.sort((a, b) => a - b);
}

export function encodeHeader(h: DiffHeader): Buffer {
  // Tags are stored newline-separated: refuse what would not read back the same.
  for (const tag of h.tags) if (tag === '' || tag.includes('\n')) throw tmError('TM_ERR_PROTOCOL', `tag ${JSON.stringify(tag)} is empty or contains a newline`, { volume: h.volumeId, seq: h.seq });
  const vid = Buffer.from(h.volumeId, 'utf8');
  const tags = Buffer.from(h.tags.join('\n'), 'utf8');
  const len = FIXED_HEADER + vid.length + tags.length + 4;
  const b = Buffer.alloc(len);
  b.writeUInt32LE(HRL_MAGIC, 0);
  b.writeUInt16LE(HRL_VERSION, 4);
  b.writeUInt16LE(len, 6);
  b.writeBigUInt64LE(BigInt(h.seq), 8);
  b.writeBigUInt64LE(BigInt(h.startTimeMs), 16);
  b.writeBigUInt64LE(BigInt(h.endTimeMs), 24);
  b.writeBigUInt64LE(BigInt(h.volumeSize), 32);
  b.writeUInt32LE(h.blockSize, 40);
  b.writeUInt8(CONSISTENCY.indexOf(h.consistency), 44);
  b.writeUInt8(h.flags, 45);
  b.writeUInt16LE(vid.length, 46);
  b.writeUInt16LE(tags.length, 48);
  vid.copy(b, FIXED_HEADER);
  tags.copy(b, FIXED_HEADER + vid.length);
  b.writeUInt32LE(crc(b.subarray(0, len - 4)), len - 4);
  return b;
}

function encodeExtentHeader(e: ExtentRecord): Buffer {
  const b = Buffer.allocUnsafe(EXTENT_HEADER); // every byte is set below (17..19 reserved, zero)
  writeU64(b, e.offset, 0);
  b.writeUInt32LE(e.length, 8);
  b.writeUInt32LE(e.storedLength, 12);
  b.writeUInt32LE(COMPRESSION.indexOf(e.compression), 16);
  b.writeUInt32LE(e.crc32c, 20);
  b.writeUInt32LE(crc(b.subarray(0, 24)), 24);
  return b;
}

/**
 * Extents are gathered and written many per `pwritev` (the journal, the cache and the staging area take
 * thousands of scattered 4 KiB extents per differential): a batch is written once it holds this many
 * bytes or BATCH_IOVECS buffers, and whatever remains at commit. IOV_MAX is 1024 on Linux.
 */
export const BATCH_BYTES = 1024 * 1024;
export const BATCH_IOVECS = 512;
const IOV_MAX = 1024;

/**
 * Writes one differential durably: extents are appended to `<final>.tmp`, and `commit()` adds the
 * trailer, fsyncs, renames into place and fsyncs the directory. Until commit the file does not exist.
 * Appended buffers are written later, in batches: the caller must not change them after `append`.
 */
export class HrlWriter {
  private fileCrc = 0;
  private extentCount = 0;
  private dataBytes = 0;
  private digest = 0;
  private pos = 0;
  /** Buffers appended but not yet written, and their bytes. */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  /**
   * With `keep`, the extents as written, so the next hop can use them without reading the file back;
   * dropped past KEEP_BYTES, so a large differential is spooled to its file, not held in memory.
   */
  private kept: Extent[] | null;
  private keptBytes = 0;

  private constructor(private readonly fh: fsp.FileHandle, readonly finalPath: string, readonly header: DiffHeader, keep: boolean) {
    this.kept = keep ? [] : null;
  }

  static async create(dir: string, header: DiffHeader, opts: { keep?: boolean } = {}): Promise<HrlWriter> {
    const finalPath = path.join(dir, hrlName(header.seq));
    const fh = await fsp.open(finalPath + TMP_SUFFIX, 'w', 0o600).catch((e) => {
      throw wrap(e, `create journal file ${finalPath + TMP_SUFFIX}`, { volume: header.volumeId, seq: header.seq });
    });
    const w = new HrlWriter(fh, finalPath, header, opts.keep ?? false);
    const h = encodeHeader(header);
    w.fileCrc = crc(h);
    w.queue(h);
    return w;
  }

  get digestSoFar(): number {
    return this.digest;
  }

  get count(): number {
    return this.extentCount;
  }

  /**
   * Append one extent; written with the next batch (at the latest at commit). `storedCrc`: the crc32c
   * of `stored` when the caller computed or verified it from these very bytes (the extent's own crc for
   * raw data, the frame's payload crc); the file crc is then combined from it instead of reading the
   * bytes again. A wrong value makes the file fail its file crc when read: it is never trusted silently.
   */
  async append(e: ExtentRecord, stored: Buffer, storedCrc?: number, release?: () => void): Promise<void> {
    if (stored.length !== e.storedLength) throw tmError('TM_ERR_PROTOCOL', `extent at ${e.offset}: stored length ${stored.length} != declared ${e.storedLength}`);
    const h = encodeExtentHeader(e);
    const dataCrc = storedCrc ?? crc(stored);
    this.fileCrc = crc32cCombine(crc(h, this.fileCrc), dataCrc, stored.length);
    this.queue(h);
    this.queue(stored);
    this.keptBytes += stored.length;
    if (this.keptBytes > KEEP_BYTES) this.kept = null;
    // A literal of one shape: spreading records of several shapes takes V8's slow generic copy.
    this.kept?.push({ offset: e.offset, length: e.length, crc32c: e.crc32c, compression: e.compression, storedLength: e.storedLength, data: stored, storedCrc: dataCrc, release });
    this.extentCount++;
    this.dataBytes += e.length;
    this.digest = digestStep(this.digest, e);
    if (this.batchBytes >= BATCH_BYTES || this.batch.length >= BATCH_IOVECS) await this.flush();
  }

  /** Trailer, fsync, rename, fsync dir. Returns the digest of the extents written. */
  async commit(): Promise<number> {
    const t = Buffer.alloc(TRAILER);
    t.writeUInt32LE(HRL_END_MAGIC, 0);
    t.writeUInt32LE(this.extentCount, 4);
    t.writeBigUInt64LE(BigInt(this.dataBytes), 8);
    t.writeUInt32LE(this.digest, 16);
    t.writeUInt32LE(crc(t.subarray(0, 20), this.fileCrc), 20);
    this.queue(t);
    await this.flush();
    try {
      await this.fh.sync();
    } finally {
      await this.fh.close();
    }
    await commitRename(this.finalPath + TMP_SUFFIX, this.finalPath);
    return this.digest;
  }

  /** The committed differential as written (only for a writer created with `keep`, within KEEP_BYTES). */
  diff(): Diff | null {
    return this.kept && { header: this.header, extents: this.kept, dataBytes: this.dataBytes, extentDigest: this.digest };
  }

  async abort(): Promise<void> {
    this.batch = [];
    await this.fh.close().catch(() => {});
    await fsp.rm(this.finalPath + TMP_SUFFIX, { force: true });
  }

  private queue(b: Buffer): void {
    this.batch.push(b);
    this.batchBytes += b.length;
  }

  /** Write the batch with one pwritev (more only if the kernel takes less). The file crc is kept by append. */
  private async flush(): Promise<void> {
    const bufs = this.batch;
    const total = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    if (bufs.length === 0) return;
    // pwritev may write less than asked (rare on regular files): go on from where it stopped.
    let pos = this.pos;
    let i = 0; // first buffer not wholly written...
    let off = 0; // ...and how much of it was
    for (;;) {
      while (i < bufs.length && bufs[i]!.length === off) {
        i++;
        off = 0;
      }
      if (i === bufs.length) break;
      const part = bufs.slice(i, i + IOV_MAX);
      if (off > 0) part[0] = part[0]!.subarray(off);
      const { bytesWritten } = await this.fh.writev(part, pos);
      if (bytesWritten === 0) throw tmError('TM_ERR_IO', `write journal file ${this.finalPath + TMP_SUFFIX}: no progress`, { path: this.finalPath + TMP_SUFFIX });
      pos += bytesWritten;
      let left = off + bytesWritten;
      while (i < bufs.length && left >= bufs[i]!.length) left -= bufs[i++]!.length;
      off = left;
    }
    this.pos += total;
  }
}

function corrupt(file: string, why: string): never {
  throw tmError('TM_ERR_HRL_CORRUPT', `${file}: ${why}`, { path: file });
}

function truncated(file: string, why: string): never {
  throw tmError('TM_ERR_HRL_TRUNCATED', `${file}: ${why}`, { path: file });
}

export function decodeHeader(buf: Buffer, file = '(buffer)'): DiffHeader & { headerLength: number } {
  if (buf.length < FIXED_HEADER + 4) truncated(file, 'shorter than a header');
  if (buf.readUInt32LE(0) !== HRL_MAGIC) corrupt(file, 'bad magic');
  // Every version keeps magic, version and header length at bytes 0..8 and the header checksum last,
  // so the checksum is verified first: a damaged version byte is corruption, not a newer format.
  const len = buf.readUInt16LE(6);
  if (len < FIXED_HEADER + 4) corrupt(file, 'header length too small');
  if (buf.length < len) truncated(file, 'header cut short');
  if (crc(buf.subarray(0, len - 4)) !== buf.readUInt32LE(len - 4)) corrupt(file, 'header checksum mismatch');
  const version = buf.readUInt16LE(4);
  if (version > HRL_VERSION) throw tmError('TM_ERR_HRL_VERSION', `${file}: format version ${version} is newer than ${HRL_VERSION}`, { path: file });
  const vlen = buf.readUInt16LE(46);
  const tlen = buf.readUInt16LE(48);
  if (FIXED_HEADER + vlen + tlen + 4 !== len) corrupt(file, 'header lengths disagree');
  const tagText = buf.toString('utf8', FIXED_HEADER + vlen, FIXED_HEADER + vlen + tlen);
  return {
    volumeId: buf.toString('utf8', FIXED_HEADER, FIXED_HEADER + vlen),
    seq: Number(buf.readBigUInt64LE(8)),
    startTimeMs: Number(buf.readBigUInt64LE(16)),
    endTimeMs: Number(buf.readBigUInt64LE(24)),
    volumeSize: Number(buf.readBigUInt64LE(32)),
    blockSize: buf.readUInt32LE(40),
    consistency: CONSISTENCY[buf.readUInt8(44)] ?? corrupt(file, 'unknown consistency class'),
    flags: buf.readUInt8(45),
    tags: tagText === '' ? [] : tagText.split('\n'),
    headerLength: len,
  };
}

function decodeExtentHeader(h: Buffer, file: string, pos: number): ExtentRecord {
  if (crc(h.subarray(0, 24)) !== h.readUInt32LE(24)) corrupt(file, `extent header checksum mismatch at byte ${pos}`);
  return {
    offset: readU64(h, 0),
    length: h.readUInt32LE(8),
    storedLength: h.readUInt32LE(12),
    compression: COMPRESSION[h.readUInt8(16)] ?? corrupt(file, 'unknown compression'),
    crc32c: h.readUInt32LE(20),
  };
}

function checkTotals(file: string, trailer: Buffer, count: number, dataBytes: number, digest: number): void {
  if (count !== trailer.readUInt32LE(4)) corrupt(file, 'extent count mismatch');
  if (dataBytes !== Number(trailer.readBigUInt64LE(8))) corrupt(file, 'data byte count mismatch');
  if (digest !== trailer.readUInt32LE(16)) corrupt(file, 'extent digest mismatch');
}

/** Parse and fully verify a differential held in memory. Extent data are views into `buf`. */
export function decodeHrl(buf: Buffer, file = '(buffer)'): Diff {
  const { headerLength, ...header } = decodeHeader(buf, file);
  if (buf.length < headerLength + TRAILER) truncated(file, 'no trailer');
  const end = buf.length - TRAILER;
  if (buf.readUInt32LE(end) !== HRL_END_MAGIC) truncated(file, 'trailer missing (file cut short?)');
  if (crc(buf.subarray(0, end + 20)) !== buf.readUInt32LE(end + 20)) corrupt(file, 'file checksum mismatch');
  const extents: Extent[] = [];
  let pos = headerLength;
  let digest = 0;
  let dataBytes = 0;
  while (pos < end) {
    if (pos + EXTENT_HEADER > end) corrupt(file, `extent header at byte ${pos} runs past the trailer`);
    const e = decodeExtentHeader(buf.subarray(pos, pos + EXTENT_HEADER), file, pos);
    pos += EXTENT_HEADER;
    if (pos + e.storedLength > end) corrupt(file, `extent data at byte ${pos} runs past the trailer`);
    extents.push({ ...e, data: buf.subarray(pos, pos + e.storedLength) });
    pos += e.storedLength;
    digest = digestStep(digest, e);
    dataBytes += e.length;
  }
  checkTotals(file, buf.subarray(end), extents.length, dataBytes, digest);
  return { header, extents, dataBytes, extentDigest: digest };
}

/** Read and fully verify a differential file; its extents own their data (proto/hrl-read.ts). */
export async function readHrl(file: string): Promise<Diff> {
  let failed: unknown = null;
  const diff = await withFileBytes(file, (buf) => {
    try {
      return detach(decodeHrl(buf, file));
    } catch (e) {
      failed = e; // the decoder's own error, not wrapped as a read failure
      return null;
    }
  }).catch((e: unknown) => {
    throw wrap(e, `read journal file ${file}`, { path: file });
  });
  if (diff === null) throw failed;
  return diff;
}

async function readAt(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/**
 * Verify a differential on disk as decodeHrl does, holding one read chunk and the extent list only:
 * the whole file's checksum is streamed, then each extent header is read where it lies.
 */
export async function openHrlOnDisk(file: string): Promise<DiffOnDisk> {
  const fh = await fsp.open(file, 'r').catch((e) => { throw wrap(e, `read journal file ${file}`, { path: file }); });
  try {
    const size = (await fh.stat()).size;
    const first = Buffer.alloc(Math.min(size, 0x10000));
    await readAt(fh, first, 0);
    const { headerLength, ...header } = decodeHeader(first, file);
    if (size < headerLength + TRAILER) truncated(file, 'no trailer');
    const end = size - TRAILER;
    const trailer = Buffer.alloc(TRAILER);
    await readAt(fh, trailer, end);
    if (trailer.readUInt32LE(0) !== HRL_END_MAGIC) truncated(file, 'trailer missing (file cut short?)');
    const chunk = Buffer.allocUnsafe(4 * 1024 * 1024);
    let fileCrc = 0;
    for (let pos = 0; pos < end + 20;) {
      const n = await readAt(fh, chunk.subarray(0, Math.min(chunk.length, end + 20 - pos)), pos);
      if (n === 0) truncated(file, 'cut short while read');
      fileCrc = crc(chunk.subarray(0, n), fileCrc);
      pos += n;
    }
    if (fileCrc !== trailer.readUInt32LE(20)) corrupt(file, 'file checksum mismatch');
    const extents: DiffOnDisk['extents'] = [];
    const h = Buffer.alloc(EXTENT_HEADER);
    let pos = headerLength;
    let digest = 0;
    let dataBytes = 0;
    while (pos < end) {
      if (pos + EXTENT_HEADER > end || (await readAt(fh, h, pos)) < EXTENT_HEADER) corrupt(file, `extent header at byte ${pos} runs past the trailer`);
      const e = decodeExtentHeader(h, file, pos);
      pos += EXTENT_HEADER;
      if (pos + e.storedLength > end) corrupt(file, `extent data at byte ${pos} runs past the trailer`);
      extents.push({ ...e, at: pos });
      pos += e.storedLength;
      digest = digestStep(digest, e);
      dataBytes += e.length;
    }
    checkTotals(file, trailer, extents.length, dataBytes, digest);
    return { header, extents, dataBytes, extentDigest: digest, file };
  } finally {
    await fh.close();
  }
}

/** A stored differential: whole in memory when small, else verified on disk and read extent by extent. */
export async function loadHrl(file: string): Promise<StoredDiff> {
  const size = await fsp.stat(file).then((st) => st.size, (e) => { throw wrap(e, `read journal file ${file}`, { path: file }); });
  return size <= IN_MEMORY_BYTES ? readHrl(file) : openHrlOnDisk(file);
}

/** The extents of a stored differential with their stored bytes, one at a time. */
export async function* extentsOf(d: StoredDiff): AsyncGenerator<Extent> {
  if (!('file' in d)) {
    yield* d.extents;
    return;
  }
  const fh = await fsp.open(d.file, 'r').catch((e) => { throw wrap(e, `read journal file ${d.file}`, { path: d.file }); });
  try {
    for (const { at, ...e } of d.extents) {
      const data = Buffer.allocUnsafe(e.storedLength);
      if ((await readAt(fh, data, at)) < data.length) truncated(d.file, `extent data at byte ${at} cut short`);
      yield { ...e, data };
    }
  } finally {
    await fh.close();
  }
}

/**
 * The extent ranges of a damaged file, as far as its checksummed headers can be trusted; null when
 * they cannot be (then the caller must assume any block may be affected).
 */
export function salvageRanges(buf: Buffer): { offset: number; length: number }[] | null {
  let pos: number;
  try {
    pos = decodeHeader(buf).headerLength;
  } catch {
    return null;
  }
  const ranges: { offset: number; length: number }[] = [];
  while (pos + TRAILER <= buf.length) {
    if (buf.length - pos === TRAILER && buf.readUInt32LE(pos) === HRL_END_MAGIC) return ranges;
    if (pos + EXTENT_HEADER > buf.length) return null;
    const h = buf.subarray(pos, pos + EXTENT_HEADER);
    if (crc(h.subarray(0, 24)) !== h.readUInt32LE(24)) return null;
    ranges.push({ offset: readU64(h, 0), length: h.readUInt32LE(8) });
    pos += EXTENT_HEADER + h.readUInt32LE(12);
  }
  // Cut short after it was committed whole: extents past the cut are unknown.
  return null;
}
