// The `scan` tracker: hash every block and compare with the hash of what was last journaled.
// Portable and unprivileged; the fallback where the kernel cannot tell us which blocks were written.
// The baseline starts as "every block is zero", because a new replica is created zero-filled
// (docs/FORMAT.md), so a fresh volume's zero blocks never travel.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc, blockHash } from '../../common/checksum.js';
import { writeFileDurable } from '../../common/durable.js';
import { tmError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { VolumeReader } from '../volume.js';
import type { Collection, DirtyExtent, Tracker } from './tracker.js';

const MAGIC = 0x48424d54; // "TMBH"
const VERSION = 1;
const HEADER = 32;
const READ_CHUNK = 1024 * 1024;
/** Stands for "unknown contents": no real block is assumed to hash to it (probability 2^-64). */
const UNKNOWN = 0n;

export class ScanTracker implements Tracker {
  readonly kind = 'scan';
  private hashes!: BigUint64Array;
  private cursor = 0;
  private readonly file: string;
  readonly blockCount: number;

  constructor(
    private readonly dir: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
    private readonly log: Logger,
  ) {
    this.file = path.join(dir, 'scan-hashes.bin');
    this.blockCount = Math.ceil(sizeBytes / blockSize);
  }

  /** `hasHistory`: differentials of this volume were journaled before, so a missing baseline was lost. */
  async open(hasHistory: boolean): Promise<void> {
    let buf: Buffer | null = null;
    try {
      buf = await fsp.readFile(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (buf === null && hasHistory) {
      this.log.error({ path: this.file }, 'scan baseline missing for a volume with history; every block will be sent again');
      this.hashes = new BigUint64Array(this.blockCount).fill(UNKNOWN);
      await this.persist();
      return;
    }
    if (buf === null) {
      // Recorded at once, so that from now on a missing file always means a lost one.
      this.hashes = this.zeroBaseline();
      await this.persist();
      return;
    }
    try {
      this.hashes = this.decode(buf);
    } catch (e) {
      // We no longer know what the replica holds: compare everything again (a full re-send).
      this.log.error({ code: (e as { code?: string }).code, err: (e as Error).message }, 'scan baseline unreadable; every block will be sent again');
      this.hashes = new BigUint64Array(this.blockCount).fill(UNKNOWN);
    }
  }

  private zeroBaseline(): BigUint64Array {
    const h = new BigUint64Array(this.blockCount).fill(blockHash(Buffer.alloc(this.blockSize)));
    const tail = this.sizeBytes - (this.blockCount - 1) * this.blockSize;
    if (this.blockCount > 0 && tail !== this.blockSize) h[this.blockCount - 1] = blockHash(Buffer.alloc(tail));
    return h;
  }

  private decode(buf: Buffer): BigUint64Array {
    if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || crc(buf.subarray(0, 28)) !== buf.readUInt32LE(28)) {
      throw tmError('TM_ERR_STATE_CORRUPT', `${this.file}: header damaged`, { path: this.file });
    }
    if (buf.readUInt16LE(4) > VERSION) throw tmError('TM_ERR_STATE_CORRUPT', `${this.file}: newer format version`, { path: this.file });
    if (buf.readUInt32LE(8) !== this.blockSize || Number(buf.readBigUInt64LE(16)) !== this.sizeBytes) {
      throw tmError('TM_ERR_VOLUME_GEOMETRY', `${this.file}: recorded geometry differs from the volume`, { path: this.file });
    }
    const body = buf.subarray(HEADER);
    if (body.length !== this.blockCount * 8 || crc(body) !== buf.readUInt32LE(24)) {
      throw tmError('TM_ERR_STATE_CORRUPT', `${this.file}: hash table damaged`, { path: this.file });
    }
    const copy = Buffer.from(body); // aligned copy for the typed array view
    return new BigUint64Array(copy.buffer, copy.byteOffset, this.blockCount);
  }

  private async persist(): Promise<void> {
    const body = Buffer.from(this.hashes.buffer, this.hashes.byteOffset, this.hashes.byteLength);
    const head = Buffer.alloc(HEADER);
    head.writeUInt32LE(MAGIC, 0);
    head.writeUInt16LE(VERSION, 4);
    head.writeUInt32LE(this.blockSize, 8);
    head.writeBigUInt64LE(BigInt(this.sizeBytes), 16);
    head.writeUInt32LE(crc(body), 24);
    head.writeUInt32LE(crc(head.subarray(0, 28)), 28);
    await writeFileDurable(this.file, Buffer.concat([head, body]));
  }

  async collect(view: VolumeReader, maxBytes: number): Promise<Collection> {
    const bs = this.blockSize;
    const chunkBlocks = Math.max(1, Math.floor(READ_CHUNK / bs));
    const maxExtent = Math.max(bs, READ_CHUNK);
    const extents: DirtyExtent[] = [];
    const updates: Array<[number, bigint]> = [];
    let bytes = 0;
    let scanned = 0;
    let block = this.cursor;
    // A clean chunk's buffer is read into again; one holding dirty extents belongs to them from now on.
    let spare: Buffer | undefined;
    while (scanned < this.blockCount && bytes < maxBytes) {
      const count = Math.min(chunkBlocks, this.blockCount - block);
      const buf = await view.read(block * bs, count * bs, spare);
      const extentsBefore = extents.length;
      let runStart = -1;
      const flush = (end: number): void => {
        const data = buf.subarray(runStart * bs, Math.min(end * bs, buf.length));
        extents.push({ offset: (block + runStart) * bs, length: data.length, data, crc32c: crc(data) });
        bytes += data.length;
        runStart = -1;
      };
      for (let i = 0; i < count; i++) {
        const data = buf.subarray(i * bs, (i + 1) * bs);
        if (data.length === 0) break; // volume shrank; geometry is checked at start
        const h = blockHash(data);
        if (h !== this.hashes[block + i]) {
          updates.push([block + i, h]);
          if (runStart < 0) runStart = i;
          if ((i + 1 - runStart) * bs >= maxExtent) flush(i + 1);
        } else if (runStart >= 0) {
          flush(i);
        }
      }
      if (runStart >= 0) flush(count);
      spare = extents.length === extentsBefore ? buf : undefined;
      scanned += count;
      block = (block + count) % Math.max(1, this.blockCount);
    }
    this.cursor = block;
    return {
      extents,
      bytes,
      more: scanned < this.blockCount,
      commit: async () => {
        for (const [b, h] of updates) this.hashes[b] = h;
        await this.persist();
      },
    };
  }

  async invalidate(ranges: { offset: number; length: number }[]): Promise<void> {
    for (const r of ranges) {
      const first = Math.floor(r.offset / this.blockSize);
      const last = Math.min(this.blockCount, Math.ceil((r.offset + r.length) / this.blockSize));
      this.hashes.fill(UNKNOWN, first, last);
    }
    await this.persist();
  }

  async invalidateAll(): Promise<void> {
    this.hashes.fill(UNKNOWN);
    await this.persist();
  }

  async close(): Promise<void> {}
}
