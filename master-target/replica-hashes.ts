// The master target's record of its replica: one xxh64 per block, kept up to date as differentials are
// applied and persisted with them, so a resync compares against the replica without re-reading it.
// A missing or damaged table is rebuilt by reading the replica, never guessed.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { blockHash } from '../common/checksum.js';
import { HashTableFile, type CapturedPages } from '../common/hash-table.js';
import type { Logger } from '../common/log.js';
import { leafHashes, rangeHash } from '../proto/range-hash.js';
import type { Replica } from './replica.js';

const READ_CHUNK = 4 * 1024 * 1024;

/** The table's changed pages as a group's commit saves them (ReplicaHashes.snapshot). */
export type TableSnapshot = CapturedPages;

/**
 * What the table must reflect to be trusted at attach: `seq` (the store's record of the last persist), or
 * a staged sequence after doneSeq (a crash after the table was written for a group of differentials and
 * before doneSeq: the group is applied again up to it, rewriting the same entries).
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
  /** Blocks [0, hashedUpTo) hold the replica's hashes; the rest are still being read (seed, below). */
  private hashedUpTo: number;
  /** A seed being hashed in the background: who waits for which block, and how it failed. */
  private seeding: { waiters: Array<{ end: number; resolve(): void; reject(e: Error): void }>; error: Error | null; seq: number | null } | null = null;
  /** Saves one at a time: the end of a seed saves beside the applier's own saves. */
  private saving: Promise<unknown> = Promise.resolve();

  constructor(dir: string, readonly sizeBytes: number, readonly blockSize: number, private readonly log: Logger) {
    this.file = new HashTableFile(path.join(dir, 'replica-hashes.bin'), blockSize, sizeBytes);
    this.blockCount = this.file.blockCount;
    this.hashedUpTo = this.blockCount;
  }

  /**
   * A seeded replica's first hashing, in the background: the table fills in block order while the resync
   * runs, instead of before it. Whoever reads or changes table entries waits for them (ready): the resync's
   * questions for the ranges asked about, the applier for the blocks a differential writes, so the reader
   * and the applier never touch the same blocks. Until it is done nothing is saved (persist only notes the
   * sequence): no table file exists, its recorded sequence stays the old one, and a master target stopped
   * meanwhile rebuilds the table from the replica at its next attach. Done: saved, logged `replica hashed`.
   */
  async seed(replica: Replica): Promise<void> {
    // A table left from some earlier replication in this folder must never be taken for this one.
    await fsp.rm(this.file.file, { force: true });
    const started = Date.now();
    this.hashes = new BigUint64Array(this.blockCount);
    this.hashedUpTo = 0;
    const seeding = { waiters: [] as Array<{ end: number; resolve(): void; reject(e: Error): void }>, error: null as Error | null, seq: null as number | null };
    this.seeding = seeding;
    const chunkBlocks = READ_CHUNK / this.blockSize;
    const readChunk = (b: number, into?: Buffer): Promise<Buffer> => {
      const p = replica.read(b * this.blockSize, Math.min(READ_CHUNK, this.sizeBytes - b * this.blockSize), into);
      p.catch(() => {});
      return p;
    };
    void (async () => {
      // The next chunk is read while this one is hashed, into the buffer hashed before: two buffers in
      // turn, warm, where a fresh one per chunk costs a page fault per 4 KiB.
      let ahead = this.blockCount > 0 ? readChunk(0) : null;
      let spare: Buffer | undefined;
      for (let b = 0; b < this.blockCount; b += chunkBlocks) {
        const data = await ahead!;
        if (seeding.error) return; // abandoned
        ahead = b + chunkBlocks < this.blockCount ? readChunk(b + chunkBlocks, spare) : null;
        this.hashes.set(leafHashes(data, this.blockSize), b);
        spare = data;
        this.hashedUpTo = Math.min(this.blockCount, b + chunkBlocks);
        this.wake(seeding);
      }
      this.file.changedAll();
      // The applier's differentials so far changed entries already read: the table reflects the last it
      // applied. From here its saves go through save() again, after this one.
      if (seeding.error) return;
      this.seeding = null;
      await this.save(seeding.seq ?? this.seq);
      this.log.info({ sizeBytes: this.sizeBytes, ms: Date.now() - started }, 'replica hashed');
    })().catch((e: Error) => {
      if (seeding.error) return; // abandoned: its replica may be closed under it
      seeding.error = e;
      this.wake(seeding);
      this.log.error({ err: e.message }, 'hashing the seeded replica failed; the master target rebuilds its table when it attaches the volume again');
    });
  }

  /**
   * This table is no longer the volume's (its attach failed, or another attach replaced its applier): a
   * seed in progress stops and saves nothing, so it cannot overwrite the file of the table that replaced it.
   */
  abandon(): void {
    const seeding = this.seeding;
    if (!seeding || seeding.error) return;
    seeding.error = new Error('the replica hash table was replaced before its seed was hashed');
    this.wake(seeding);
  }

  private wake(seeding: NonNullable<ReplicaHashes['seeding']>): void {
    seeding.waiters = seeding.waiters.filter((w) => {
      if (seeding.error) w.reject(seeding.error);
      else if (this.hashedUpTo >= w.end) w.resolve();
      else return true;
      return false;
    });
  }

  /** Resolves once the table holds blocks [0, endBlock): at once unless a seed is being hashed. */
  ready(endBlock: number): Promise<void> {
    const seeding = this.seeding;
    const end = Math.min(endBlock, this.blockCount);
    if (!seeding || this.hashedUpTo >= end) return Promise.resolve();
    if (seeding.error) return Promise.reject(seeding.error);
    return new Promise((resolve, reject) => seeding.waiters.push({ end, resolve, reject }));
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
        // A table saved for a group of differentials (Applier: group commit) reflects the last of them; they
        // are all still staged after a crash before doneSeq, and applied again up to it before anything reads it.
        const ok = !expect || loaded.seq === expect.seq || (loaded.seq != null && loaded.seq > expect.doneSeq && expect.staged.includes(loaded.seq));
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

  /**
   * The table's changed pages as they are now, for persist(seq, snapshot) to save later while the table
   * changes on (the applier writes the next group meanwhile). Null while a seed is hashed (nothing saved).
   */
  snapshot(): TableSnapshot | null {
    return this.seeding ? null : this.file.capture(this.hashes);
  }

  /** A snapshot that will not be persisted: the next save writes the table whole, so nothing it held is lost. */
  dropSnapshot(): void {
    this.file.uncaptured();
  }

  /**
   * Write the table durably as reflecting `seq` (default: what it reflected); while a seed is hashed, only
   * noted (seed). With a snapshot: what it captured, not the table as it is now. A snapshot of changed
   * pages whose file is gone saves nothing (the next save writes the table whole): a missing table is
   * rebuilt from the replica at attach, never trusted.
   */
  async persist(seq = this.seq, snapshot?: TableSnapshot | null): Promise<void> {
    if (this.seeding) {
      this.seeding.seq = seq;
      return;
    }
    // Captured (null) while a seed was hashed that has ended since: the live table may already hold the
    // next group's entries, so it is not saved as reflecting `seq`. The seed's own save and the next
    // group's (whole, after the seed) write it; a table older than doneSeq is rebuilt at attach.
    if (snapshot === null) return;
    await this.save(seq, snapshot ?? undefined);
  }

  private save(seq: number, snapshot?: TableSnapshot): Promise<void> {
    const run = this.saving.then(async () => {
      if (!snapshot) await this.file.save(this.hashes, seq);
      else if (!(await this.file.saveCaptured(snapshot, seq))) {
        this.log.warn({ file: this.file.file }, 'replica hash table file missing at save; written whole at the next save');
        return;
      }
      this.seq = seq;
    });
    this.saving = run.catch(() => {});
    return run;
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
