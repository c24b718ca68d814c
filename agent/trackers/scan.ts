// The `scan` tracker: hash every block and compare with the hash of what was last journaled.
// Portable and unprivileged; the fallback where the kernel cannot tell us which blocks were written.
// Its baseline comes from a checksum resync (agent/resync.ts): a new volume, or one whose baseline was
// lost or damaged, is resynced before scanning, so no assumption about the replica's contents is made.
import path from 'node:path';
import { crc } from '../../common/checksum.js';
import { HashTableFile } from '../../common/hash-table.js';
import type { Logger } from '../../common/log.js';
import { leafHashes } from '../../proto/range-hash.js';
import type { VolumeReader } from '../volume.js';
import type { Collection, DirtyExtent, Tracker } from './tracker.js';

const READ_CHUNK = 1024 * 1024;
/** Stands for "unknown contents": no real block is assumed to hash to it (probability 2^-64). */
const UNKNOWN = 0n;

export class ScanTracker implements Tracker {
  readonly kind = 'scan';
  private hashes!: BigUint64Array;
  private cursor = 0;
  private readonly file: HashTableFile;
  readonly blockCount: number;

  constructor(
    dir: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
    private readonly log: Logger,
  ) {
    this.file = new HashTableFile(path.join(dir, 'scan-hashes.bin'), blockSize, sizeBytes);
    this.blockCount = this.file.blockCount;
  }

  async open(): Promise<string | null> {
    try {
      const loaded = await this.file.load();
      if (loaded) {
        this.hashes = loaded.hashes;
        return null;
      }
    } catch (e) {
      this.log.error({ code: (e as { code?: string }).code, err: (e as Error).message }, 'scan baseline unreadable; the volume will be resynced');
      this.hashes = new BigUint64Array(this.blockCount).fill(UNKNOWN);
      return 'scan baseline damaged';
    }
    this.hashes = new BigUint64Array(this.blockCount).fill(UNKNOWN);
    return 'no scan baseline';
  }

  private persist(): Promise<void> {
    return this.file.save(this.hashes);
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
    const spares: Buffer[] = [];
    // The next chunk is read while this one is hashed: a block device is read with O_DIRECT, which has no
    // kernel readahead to overlap the two for us.
    const readChunk = (at: number): { at: number; count: number; data: Promise<Buffer> } => {
      const count = Math.min(chunkBlocks, this.blockCount - at);
      const data = view.read(at * bs, count * bs, spares.pop());
      data.catch(() => {}); // awaited below, or abandoned when the scan stops early
      return { at, count, data };
    };
    let ahead = this.blockCount > 0 ? readChunk(block) : null;
    while (ahead && scanned < this.blockCount && bytes < maxBytes) {
      const { count } = ahead;
      const buf = await ahead.data;
      const nextAt = (block + count) % Math.max(1, this.blockCount);
      ahead = scanned + count < this.blockCount ? readChunk(nextAt) : null;
      const extentsBefore = extents.length;
      let runStart = -1;
      const flush = (end: number): void => {
        const data = buf.subarray(runStart * bs, Math.min(end * bs, buf.length));
        extents.push({ offset: (block + runStart) * bs, length: data.length, data, crc32c: crc(data) });
        bytes += data.length;
        runStart = -1;
      };
      // One native call hashes the chunk's blocks (the values blockHash gives one at a time). A short read
      // (the volume shrank; geometry is checked at start) hashes fewer.
      const leaves = leafHashes(buf, bs);
      for (let i = 0; i < leaves.length; i++) {
        const h = leaves[i]!;
        if (h !== this.hashes[block + i]) {
          updates.push([block + i, h]);
          if (runStart < 0) runStart = i;
          if ((i + 1 - runStart) * bs >= maxExtent) flush(i + 1);
        } else if (runStart >= 0) {
          flush(i);
        }
      }
      if (runStart >= 0) flush(count);
      if (extents.length === extentsBefore) spares.push(buf);
      scanned += count;
      block = nextAt;
    }
    await ahead?.data.catch(() => {}); // a read started for a chunk this pass will not look at
    this.cursor = block;
    return {
      extents,
      bytes,
      more: scanned < this.blockCount,
      commit: async () => {
        for (const [b, h] of updates) {
          this.hashes[b] = h;
          this.file.changed(b);
        }
        await this.persist();
      },
    };
  }

  async invalidate(ranges: { offset: number; length: number }[]): Promise<void> {
    for (const r of ranges) {
      const first = Math.floor(r.offset / this.blockSize);
      const last = Math.min(this.blockCount, Math.ceil((r.offset + r.length) / this.blockSize));
      this.hashes.fill(UNKNOWN, first, last);
      this.file.changed(first, last);
    }
    await this.persist();
  }

  async adoptBaseline(firstBlock: number, leaves: BigUint64Array): Promise<void> {
    this.hashes.set(leaves, firstBlock);
    this.file.changed(firstBlock, firstBlock + leaves.length);
    await this.persist();
  }

  async settled(firstBlock: number, leaves: BigUint64Array): Promise<boolean[]> {
    return Array.from(leaves, (h, i) => this.hashes[firstBlock + i] === h);
  }

  async close(): Promise<void> {}
}
