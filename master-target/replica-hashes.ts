// The master target's record of its replica: one xxh64 per block, kept up to date as differentials are
// applied and persisted with them, so a resync compares against the replica without re-reading it.
// A missing or damaged table is rebuilt by reading the replica, never guessed.
import path from 'node:path';
import { blockHash } from '../common/checksum.js';
import { HashTableFile } from '../common/hash-table.js';
import type { Logger } from '../common/log.js';
import { leafHashes, rangeHash } from '../proto/range-hash.js';
import type { Replica } from './replica.js';

const READ_CHUNK = 4 * 1024 * 1024;

/**
 * What the table must reflect to be trusted at attach: `seq` (the store's record of the last persist), or
 * doneSeq + 1 when that differential is staged (a crash after the table was written and before doneSeq:
 * it is applied again, rewriting the same entries).
 */
export interface HashExpectation {
  seq: number;
  doneSeq: number;
  staged: readonly number[];
}

export class ReplicaHashes {
  hashes!: BigUint64Array;
  /** The sequence whose application the table reflects (recorded in the file, docs/FORMAT.md §3.2). */
  seq = 0;
  readonly blockCount: number;
  private readonly file: HashTableFile;

  constructor(dir: string, readonly sizeBytes: number, readonly blockSize: number, private readonly log: Logger) {
    this.file = new HashTableFile(path.join(dir, 'replica-hashes.bin'), blockSize, sizeBytes);
    this.blockCount = this.file.blockCount;
  }

  /**
   * Load the table; rebuild it from the replica's data when it is missing, damaged, or (with `expect`)
   * reflects another sequence than the store says was applied: a table written by a stale applier, or
   * one without a recorded sequence (version 1), is never trusted for a resync's answers.
   */
  async open(replica: Replica, expect?: HashExpectation): Promise<void> {
    try {
      const loaded = await this.file.load();
      if (loaded) {
        const ok = !expect || loaded.seq === expect.seq || (loaded.seq === expect.doneSeq + 1 && expect.staged.includes(loaded.seq));
        if (ok) {
          this.hashes = loaded.hashes;
          this.seq = loaded.seq ?? 0;
          return;
        }
        this.log.warn({ tableSeq: loaded.seq, expectedSeq: expect!.seq }, 'replica hash table reflects another sequence than was applied; rebuilding it from the replica');
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'replica hash table damaged; rebuilding it from the replica');
    }
    await this.rebuild(replica, expect?.seq ?? 0);
  }

  /** A new sparse replica: every block reads as zeros, no need to read it. */
  async initZero(): Promise<void> {
    this.hashes = new BigUint64Array(this.blockCount).fill(blockHash(Buffer.alloc(this.blockSize)));
    const tail = this.sizeBytes - (this.blockCount - 1) * this.blockSize;
    if (this.blockCount > 0 && tail !== this.blockSize) this.hashes[this.blockCount - 1] = blockHash(Buffer.alloc(tail));
    this.file.changedAll();
    await this.persist(0);
  }

  /** Hash the replica's data; the table then reflects `seq` (what the store says was applied). */
  async rebuild(replica: Replica, seq = 0): Promise<void> {
    const started = Date.now();
    this.hashes = new BigUint64Array(this.blockCount);
    const chunkBlocks = READ_CHUNK / this.blockSize;
    for (let b = 0; b < this.blockCount; b += chunkBlocks) {
      const data = await replica.read(b * this.blockSize, Math.min(READ_CHUNK, this.sizeBytes - b * this.blockSize));
      this.hashes.set(leafHashes(data, this.blockSize), b);
    }
    this.file.changedAll();
    await this.persist(seq);
    this.log.info({ sizeBytes: this.sizeBytes, ms: Date.now() - started }, 'replica hashed');
  }

  /** Record data just written at `offset` (block-aligned, as every extent is). */
  update(offset: number, data: Buffer): void {
    const first = offset / this.blockSize;
    const leaves = leafHashes(data, this.blockSize);
    this.hashes.set(leaves, first);
    this.file.changed(first, first + leaves.length);
  }

  /** Write the table durably as reflecting `seq` (default: what it reflected). */
  async persist(seq = this.seq): Promise<void> {
    await this.file.save(this.hashes, seq);
    this.seq = seq;
  }

  rangeHash(index: number, rangeBlocks: number): bigint {
    return rangeHash(this.hashes, index, rangeBlocks);
  }

  /**
   * Verify: read the blocks of these ranges from the replica itself and correct the table where the data
   * disagree with it (silent corruption, or writes from outside Tidemark). Returns the blocks that differed.
   */
  async reread(replica: Replica, ranges: number[], rangeBlocks: number, onDamaged?: (blocks: number[]) => Promise<void>): Promise<number[]> {
    const wrong: number[] = [];
    for (const r of ranges) {
      const first = r * rangeBlocks;
      const count = Math.min(rangeBlocks, this.blockCount - first);
      if (count <= 0) continue;
      const data = await replica.read(first * this.blockSize, Math.min(count * this.blockSize, this.sizeBytes - first * this.blockSize));
      const actual = leafHashes(data, this.blockSize);
      for (let i = 0; i < actual.length; i++) {
        if (actual[i] !== this.hashes[first + i]) {
          wrong.push(first + i);
          this.hashes[first + i] = actual[i]!;
          this.file.changed(first + i);
        }
      }
    }
    if (wrong.length > 0) {
      this.log.error({ blocks: wrong.length }, 'replica blocks differ from their recorded hashes; recorded the actual data');
      // Durably before the table forgets what was written there: the only other evidence of the damage.
      await onDamaged?.(wrong);
      await this.persist();
    }
    return wrong;
  }
}
