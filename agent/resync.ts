// Checksum resync (InMage's Step I): bring the replica in step without copying the volume. The agent
// hashes the source a window at a time; it asks the master target (relayed by the process server)
// which 1 MiB ranges differ, then which 64 KiB ranges of those, then which blocks; only those blocks
// are read into a differential. The cursor is durable after each window, so a resync killed anywhere
// resumes where it was. Writes made meanwhile are found by the tracker afterwards (Step II), and the
// differential after that carries FLAG_RESYNC_END: only then is the replica consistent again.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { writeFileDurable } from '../common/durable.js';
import type { Logger } from '../common/log.js';
import { FLAG_RESYNC } from '../proto/hrl.js';
import type { HashAnswer, HashQuery } from '../proto/messages.js';
import { encodeHashes, leafHashes, rangeHash } from '../proto/range-hash.js';
import type { Capture } from './capture/capture.js';
import type { Journal } from './journal.js';
import type { DirtyExtent, Tracker } from './trackers/tracker.js';

/** resync: send what differs. verify: only report it. repair: verify, then send what differs. */
export type ResyncMode = 'resync' | 'verify' | 'repair';

/** Blocks per range at each level, coarse to fine (1 MiB, 64 KiB, one block at 4 KiB blocks). */
const LEVELS = [256, 16, 1];
const MAX_EXTENT = 1024 * 1024;
const REPORT_RANGES = 1000;
/** Ranges per query, so a query's header stays small (its hashes travel as the frame's payload). */
const QUERY_RANGES = 4096;

export interface ResyncState {
  active: boolean;
  mode: ResyncMode;
  reason: string;
  cursorBlock: number;
  startedAt: number;
  finishedAt: number;
  bytesProcessed: number;
  bytesSent: number;
  hashBytes: number;
  differingBlocks: number;
  /** Byte ranges found different (verify), capped at REPORT_RANGES. */
  differing: Array<[number, number]>;
  /** The pass is done; the next differential must carry FLAG_RESYNC_END (after Step II). */
  endPending: boolean;
  /** Last differential journaled before this pass: the only ones that may touch blocks it has yet to compare. */
  baseSeq: number;
  /** Last differential journaled when the cursor was saved: anything newer belongs to the window being redone. */
  cursorSeq: number;
}

export type Ask = (q: Omit<HashQuery, 'requestId'>, hashes: Buffer) => Promise<HashAnswer>;

export class Resync {
  state: ResyncState;
  private readonly file: string;
  readonly blockCount: number;
  private readonly windowBlocks: number;

  constructor(
    dir: string,
    private readonly volumeId: string,
    private readonly sizeBytes: number,
    private readonly blockSize: number,
    private readonly deps: { capture: Capture; tracker: Tracker; journal: Journal; ask: Ask; log: Logger; windowBytes: number },
  ) {
    // Whole coarse ranges per window, so both sides agree on every range's extent.
    this.windowBlocks = Math.max(LEVELS[0]!, Math.floor(deps.windowBytes / blockSize / LEVELS[0]!) * LEVELS[0]!);
    this.file = path.join(dir, 'resync.json');
    this.blockCount = Math.ceil(sizeBytes / blockSize);
    this.state = Resync.idle();
  }

  private static idle(): ResyncState {
    return { active: false, mode: 'resync', reason: '', cursorBlock: 0, startedAt: 0, finishedAt: 0, bytesProcessed: 0, bytesSent: 0, hashBytes: 0, differingBlocks: 0, differing: [], endPending: false, baseSeq: 0, cursorSeq: 0 };
  }

  async open(): Promise<void> {
    try {
      const saved = JSON.parse(await fsp.readFile(this.file, 'utf8')) as Partial<ResyncState>;
      // Without a recorded base, wait for everything journaled so far: always safe.
      this.state = { ...Resync.idle(), baseSeq: this.deps.journal.lastSeq, cursorSeq: this.deps.journal.lastSeq, ...saved };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.log.error({ err: (e as Error).message }, 'resync state unreadable; starting a resync from the beginning');
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') await this.start('resync', 'resync state unreadable', { resume: true });
    }
    if (this.state.active) this.deps.log.info({ mode: this.state.mode, cursorBlock: this.state.cursorBlock, reason: this.state.reason }, 'resuming resync');
  }

  get active(): boolean {
    return this.state.active;
  }

  /**
   * Start a pass from the beginning. A resync or repair overrides a running verify, not the reverse (false:
   * not started); with `resume`, a resync or repair already running just goes on. An end marker still
   * owed by an earlier pass stays owed.
   */
  async start(mode: ResyncMode, reason: string, opts: { resume?: boolean } = {}): Promise<boolean> {
    const running = this.state.active && this.state.mode !== 'verify';
    if (running && (mode === 'verify' || opts.resume)) return false;
    this.state = { ...Resync.idle(), active: true, mode, reason, startedAt: Date.now(), endPending: this.state.endPending, baseSeq: this.deps.journal.lastSeq, cursorSeq: this.deps.journal.lastSeq };
    await this.save();
    this.deps.log.warn({ volume: this.volumeId, mode, reason }, 'resync started');
    return true;
  }

  /** The differential carrying FLAG_RESYNC_END is durable. */
  async ended(): Promise<void> {
    this.state.endPending = false;
    await this.save();
  }

  private save(): Promise<void> {
    return writeFileDurable(this.file, JSON.stringify(this.state));
  }

  /** Compare (and for resync/repair, journal) one window. Returns true when the pass is complete. */
  async step(): Promise<boolean> {
    const s = this.state;
    const bs = this.blockSize;
    const first = s.cursorBlock;
    const count = Math.min(this.windowBlocks, this.blockCount - first);
    const captured = await this.deps.capture.begin();
    try {
      const data = await captured.view.read(first * bs, Math.min(count * bs, this.sizeBytes - first * bs));
      // Read: a frozen filesystem is thawed now, not held through the exchange with the replica.
      await captured.settle?.();
      const leaves = leafHashes(data, bs);
      // The replica must be asked about after every differential that may touch this window. A resync or
      // repair owns the volume (no scanning), and its own earlier windows cover other blocks: only what
      // came before the pass matters, so windows need not wait for each other's apply. Except a window
      // redone after a crash: what it journaled before the crash is newer than the saved cursor, and must
      // be applied before the question, or a block changed since could look equal and be lost. A verify
      // runs beside scanning, whose differentials may touch any block: it waits for all of them.
      const last = this.deps.journal.lastSeq;
      const afterSeq = s.mode === 'verify' || last > s.cursorSeq ? last : s.baseSeq;
      const differing = await this.compare(first, count, leaves, afterSeq, s.mode !== 'resync');
      s.differingBlocks += differing.length;
      const extents = this.extents(differing, first, data);
      if (s.mode === 'verify') {
        for (const e of extents) if (s.differing.length < REPORT_RANGES) s.differing.push([e.offset, e.length]);
      } else {
        if (extents.length > 0) {
          await this.deps.journal.write({ startTimeMs: captured.atMs, endTimeMs: Date.now(), consistency: 'FUZZY', tags: [], flags: FLAG_RESYNC }, extents);
          s.bytesSent += extents.reduce((n, e) => n + e.length, 0);
        }
        // The replica now holds (or will, once that differential is applied) what was read here.
        await this.deps.tracker.adoptBaseline(first, leaves);
      }
      s.bytesProcessed += data.length;
      s.cursorBlock = first + count;
      s.cursorSeq = this.deps.journal.lastSeq;
      if (s.cursorBlock >= this.blockCount) {
        s.active = false;
        s.endPending ||= s.mode !== 'verify';
        s.finishedAt = Date.now();
        this.deps.log.info({ volume: this.volumeId, mode: s.mode, differingBlocks: s.differingBlocks, bytesSent: s.bytesSent, hashBytes: s.hashBytes, ms: s.finishedAt - s.startedAt }, 'resync pass complete');
      }
      await this.save();
      return !s.active;
    } finally {
      await captured.release();
    }
  }

  /** Coarse to fine: the block indexes in the window whose contents differ from the replica's. */
  private async compare(first: number, count: number, leaves: BigUint64Array, afterSeq: number, reread: boolean): Promise<number[]> {
    let candidates: number[] = [];
    for (let i = Math.floor(first / LEVELS[0]!); i * LEVELS[0]! < first + count; i++) candidates.push(i);
    for (let level = 0; level < LEVELS.length && candidates.length > 0; level++) {
      const rangeBlocks = LEVELS[level]!;
      // Only the coarsest level re-reads the replica: that reads every block once and corrects its hashes.
      const differ: number[] = [];
      for (let i = 0; i < candidates.length; i += QUERY_RANGES) {
        const ranges = candidates.slice(i, i + QUERY_RANGES);
        const hashes = encodeHashes(ranges.map((r) => rangeHash(leaves, r, rangeBlocks, first)));
        const answer = await this.deps.ask({ volumeId: this.volumeId, rangeBlocks, ranges, afterSeq, reread: reread && level === 0 }, hashes);
        this.state.hashBytes += hashes.length + ranges.length * 4 + answer.differing.length * 4;
        differ.push(...answer.differing);
      }
      const next = LEVELS[level + 1];
      if (next === undefined) return differ;
      const per = rangeBlocks / next;
      candidates = differ.flatMap((r) => Array.from({ length: per }, (_, k) => r * per + k)).filter((c) => c * next < first + count);
    }
    return [];
  }

  /** Differing blocks as extents (runs of neighbours, at most 1 MiB), with data from the window. */
  private extents(blocks: number[], first: number, data: Buffer): DirtyExtent[] {
    const out: DirtyExtent[] = [];
    const bs = this.blockSize;
    let i = 0;
    while (i < blocks.length) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && (j - i + 1) * bs <= MAX_EXTENT) j++;
      const start = (blocks[i]! - first) * bs;
      const slice = data.subarray(start, Math.min(start + (j - i) * bs, data.length));
      out.push({ offset: blocks[i]! * bs, length: slice.length, data: slice, crc32c: crc(slice) });
      i = j;
    }
    return out;
  }

  progress(): Record<string, unknown> {
    const s = this.state;
    const total = this.sizeBytes;
    const done = Math.min(total, s.cursorBlock * this.blockSize);
    const elapsed = (s.finishedAt || Date.now()) - s.startedAt;
    const etaMs = s.active && s.bytesProcessed > 0 ? Math.round((elapsed / s.bytesProcessed) * (total - done)) : 0;
    return { ...s, percent: total === 0 ? 100 : Math.round((done / total) * 1000) / 10, etaMs, differing: s.differing.slice(0, 50), differingRanges: s.differing.length };
  }
}
