// A retention segment (.tmrl): the before-images of the replica blocks that differentials fromSeq..toSeq
// overwrote, each block's image taken before the first of them touched it. Applied to the replica at
// toSeq, it gives the replica at fromSeq - 1. Byte layout in docs/FORMAT.md §10.
//
// The header names the recovery points at both ends (`base`: the state before fromSeq; `tip`: the state
// after toSeq), so the index of points is the set of segment headers and never disagrees with them.
// Written to a temp name, fsync'd and renamed: a segment under its final name is always complete.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../../common/checksum.js';
import { readU64, writeU64 } from '../../common/u64.js';
import { commitRename, tempName } from '../../common/durable.js';
import { tmError, wrap } from '../../common/errors.js';
import type { RecoveryPoint } from '../volume-state.js';

export const SEGMENT_MAGIC = 0x4c524d54; // "TMRL"
export const SEGMENT_END_MAGIC = 0x45524d54; // "TMRE"
export const SEGMENT_VERSION = 1;
const PREFIX = 12;
export const RECORD_HEADER = 20;
const TRAILER = 20;
const SUFFIX = '.tmrl';

export interface SegmentHeader {
  volumeId: string;
  fromSeq: number;
  toSeq: number;
  blockSize: number;
  sizeBytes: number;
  /** The replica before fromSeq, when that was a recovery point. */
  base: RecoveryPoint | null;
  /** The replica after toSeq, when that is a recovery point. */
  tip: RecoveryPoint | null;
  createdAt: number;
}

/** One before-image: `data` is what the replica held at [offset, offset + length) before the segment. */
export interface BeforeImage {
  offset: number;
  data: Buffer;
  crc32c: number;
}

export function segmentName(fromSeq: number, toSeq: number): string {
  return `${String(fromSeq).padStart(10, '0')}-${String(toSeq).padStart(10, '0')}${SUFFIX}`;
}

/** [fromSeq, toSeq] of a segment file name, or null for any other name. */
export function parseSegmentName(name: string): { fromSeq: number; toSeq: number } | null {
  const m = /^(\d{10})-(\d{10})\.tmrl$/.exec(name);
  return m ? { fromSeq: Number(m[1]), toSeq: Number(m[2]) } : null;
}

/** Records are gathered and written this many bytes at a time (one writev), not two writes per record. */
const WRITE_BATCH = 4 << 20;
/** Pieces smaller than this are copied into one buffer rather than written from where they are. */
const COPY_BELOW = 64 << 10;

/** Streams records into a new segment; commit() makes it durable under its final name. */
export class SegmentWriter {
  private offset = 0;
  private count = 0;
  private dataBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Small pieces are copied here until written: [cutAt, staged) is not yet in `pending`. */
  private stage = Buffer.allocUnsafe(WRITE_BATCH);
  private staged = 0;
  private cutAt = 0;
  private readonly header = Buffer.alloc(RECORD_HEADER);
  private constructor(readonly file: string, private readonly tmp: string, private readonly fh: fsp.FileHandle) {}

  static async create(dir: string, header: SegmentHeader): Promise<SegmentWriter> {
    const file = path.join(dir, segmentName(header.fromSeq, header.toSeq));
    const tmp = tempName(file); // a merge and the apply path may write a segment of the same name at once
    const fh = await fsp.open(tmp, 'w', 0o600).catch((e) => { throw wrap(e, `create retention segment ${file}`, { path: file }); });
    const w = new SegmentWriter(file, tmp, fh);
    const json = Buffer.from(JSON.stringify(header));
    const prefix = Buffer.alloc(PREFIX);
    prefix.writeUInt32LE(SEGMENT_MAGIC, 0);
    prefix.writeUInt16LE(SEGMENT_VERSION, 4);
    prefix.writeUInt32LE(json.length, 8);
    const head = Buffer.concat([prefix, json, Buffer.alloc(4)]);
    head.writeUInt32LE(crc(head.subarray(0, head.length - 4)), head.length - 4);
    await w.write(head);
    return w;
  }

  private async write(buf: Buffer): Promise<void> {
    this.put(buf);
    if (this.pendingBytes >= WRITE_BATCH) await this.flush();
  }

  private put(buf: Buffer): void {
    if (buf.length < COPY_BELOW) {
      // Small pieces (record headers, block-sized images) are copied together: a few large writes, not
      // thousands of iovecs.
      if (this.staged + buf.length > this.stage.length) {
        this.cut();
        this.stage = Buffer.allocUnsafe(WRITE_BATCH);
        this.staged = 0;
        this.cutAt = 0;
      }
      buf.copy(this.stage, this.staged);
      this.staged += buf.length;
    } else {
      this.cut();
      this.pending.push(buf);
    }
    this.pendingBytes += buf.length;
  }

  /** What is copied into the stage since the last cut joins the pending writes (in order). */
  private cut(): void {
    if (this.staged > this.cutAt) this.pending.push(this.stage.subarray(this.cutAt, this.staged));
    this.cutAt = this.staged;
  }

  private async flush(): Promise<void> {
    this.cut();
    const bufs = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    while (bufs.length > 0) {
      let { bytesWritten } = await this.fh.writev(bufs, this.offset);
      this.offset += bytesWritten;
      // A short writev: drop what went out and write the rest.
      while (bufs.length > 0 && bytesWritten >= bufs[0]!.length) bytesWritten -= bufs.shift()!.length;
      if (bytesWritten > 0) bufs[0] = bufs[0]!.subarray(bytesWritten);
    }
    // Written: the stage is free again.
    this.staged = 0;
    this.cutAt = 0;
  }

  async add(image: BeforeImage): Promise<void> {
    this.record(image);
    if (this.pendingBytes >= WRITE_BATCH) await this.flush();
  }

  /** add() for many records (no promise per record). */
  async addMany(images: Iterable<BeforeImage>): Promise<void> {
    for (const image of images) {
      this.record(image);
      if (this.pendingBytes >= WRITE_BATCH) await this.flush();
    }
  }

  private record(image: BeforeImage): void {
    const h = this.header;
    writeU64(h, image.offset, 0);
    h.writeUInt32LE(image.data.length, 8);
    h.writeUInt32LE(image.crc32c, 12);
    h.writeUInt32LE(crc(h.subarray(0, 16)), 16);
    this.put(h);
    this.put(image.data);
    this.count++;
    this.dataBytes += image.data.length;
  }

  async commit(): Promise<{ file: string; bytes: number }> {
    await this.seal();
    await commitRename(this.tmp, this.file);
    return { file: this.file, bytes: this.offset };
  }

  /** The trailer written and the file fsync'd and closed, still under its temp name. */
  async seal(): Promise<void> {
    await this.finish();
    await this.sync();
  }

  /** The trailer written (not yet durable: sync() next). */
  async finish(): Promise<void> {
    const t = Buffer.alloc(TRAILER);
    t.writeUInt32LE(SEGMENT_END_MAGIC, 0);
    t.writeUInt32LE(this.count, 4);
    t.writeBigUInt64LE(BigInt(this.dataBytes), 8);
    t.writeUInt32LE(crc(t.subarray(0, 16)), 16);
    await this.write(t);
    await this.flush();
  }

  /** After finish(): the file fsync'd and closed, still under its temp name. */
  async sync(): Promise<void> {
    await this.fh.sync();
    await this.fh.close();
  }

  /** A sealed segment renamed to its final name; durable once its directory is fsync'd (the caller's). */
  async rename(): Promise<{ file: string; bytes: number }> {
    await fsp.rename(this.tmp, this.file);
    return { file: this.file, bytes: this.offset };
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
    await fsp.rm(this.tmp, { force: true });
  }
}

function corrupt(file: string, why: string): Error {
  return tmError('TM_ERR_RETENTION_CORRUPT', `retention segment ${path.basename(file)}: ${why}`, { path: file });
}

async function readExactly(fh: fsp.FileHandle, file: string, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw corrupt(file, `ends at ${position + done}, expected ${position + length} bytes`);
    done += bytesRead;
  }
  return buf;
}

async function readHeaderFrom(fh: fsp.FileHandle, file: string): Promise<{ header: SegmentHeader; end: number }> {
  const prefix = await readExactly(fh, file, PREFIX, 0);
  if (prefix.readUInt32LE(0) !== SEGMENT_MAGIC) throw corrupt(file, 'not a retention segment (bad magic)');
  const version = prefix.readUInt16LE(4);
  if (version > SEGMENT_VERSION) throw tmError('TM_ERR_RETENTION_CORRUPT', `retention segment ${path.basename(file)} is format version ${version}; this Tidemark reads up to ${SEGMENT_VERSION}`, { path: file });
  const len = prefix.readUInt32LE(8);
  if (len > 1 << 20) throw corrupt(file, `header length ${len} is implausible`);
  const rest = await readExactly(fh, file, len + 4, PREFIX);
  if (crc(rest.subarray(0, len), crc(prefix)) !== rest.readUInt32LE(len)) throw corrupt(file, 'header checksum mismatch');
  return { header: JSON.parse(rest.subarray(0, len).toString('utf8')) as SegmentHeader, end: PREFIX + len + 4 };
}

export async function readSegmentHeader(file: string): Promise<SegmentHeader> {
  const fh = await fsp.open(file, 'r');
  try {
    return (await readHeaderFrom(fh, file)).header;
  } finally {
    await fh.close();
  }
}

/**
 * Every before-image of a segment, in file order, each checked against its checksum as it is read. The
 * trailer is checked at the end: a segment that stops early or counts differently is corrupt.
 */
/** Reads a file front to back in large chunks; take(n) hands out the next n bytes (a copy-free slice when it can). */
class ChunkReader {
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;
  constructor(private readonly fh: fsp.FileHandle, private readonly file: string, private pos: number, private readonly size: number) {}

  async take(n: number): Promise<Buffer> {
    if (this.buf.length - this.at < n) {
      const rest = this.buf.subarray(this.at);
      const want = Math.max(n - rest.length, Math.min(READ_CHUNK, this.size - this.pos));
      const more = await readExactly(this.fh, this.file, want, this.pos);
      this.pos += more.length;
      this.buf = rest.length ? Buffer.concat([rest, more]) : more;
      this.at = 0;
    }
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
}

const READ_CHUNK = 4 << 20;

export async function* readSegment(file: string): AsyncGenerator<BeforeImage> {
  const fh = await fsp.open(file, 'r').catch((e) => { throw wrap(e, `open retention segment ${file}`, { path: file }); });
  try {
    const size = (await fh.stat()).size;
    let pos = (await readHeaderFrom(fh, file)).end;
    const reader = new ChunkReader(fh, file, pos, size);
    let count = 0;
    let dataBytes = 0;
    while (pos < size - TRAILER) {
      const h = await reader.take(RECORD_HEADER);
      if (crc(h.subarray(0, 16)) !== h.readUInt32LE(16)) throw corrupt(file, `record header at ${pos} fails its checksum`);
      const offset = readU64(h, 0);
      const length = h.readUInt32LE(8);
      if (pos + RECORD_HEADER + length > size - TRAILER) throw corrupt(file, `record at ${pos} runs past the trailer`);
      const data = await reader.take(length);
      const sum = h.readUInt32LE(12);
      if (crc(data) !== sum) throw corrupt(file, `before-image at replica offset ${offset} fails its checksum`);
      pos += RECORD_HEADER + length;
      count++;
      dataBytes += length;
      yield { offset, data, crc32c: sum };
    }
    const t = await reader.take(TRAILER);
    if (t.readUInt32LE(0) !== SEGMENT_END_MAGIC || crc(t.subarray(0, 16)) !== t.readUInt32LE(16)) throw corrupt(file, 'trailer missing or damaged');
    if (t.readUInt32LE(4) !== count || Number(t.readBigUInt64LE(8)) !== dataBytes) throw corrupt(file, `trailer counts ${t.readUInt32LE(4)} records, the file holds ${count}`);
  } finally {
    await fh.close();
  }
}
