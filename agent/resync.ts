// Checksum resync (InMage's Step I): bring the replica in step without copying the volume. The agent
// hashes the source a window at a time; it asks the master target (relayed by the process server)
// which 1 MiB ranges differ, then which 64 KiB ranges of those, then which blocks; only those blocks
// are read into a differential. Windows are pipelined: while one is journaled, the next ones are read,
// hashed and compared (their questions in flight together), but they are journaled in order and the
// cursor is durable only after each window's differential is, so a resync killed anywhere resumes where
// it was and redoes at most the window it had journaled. Writes made meanwhile are found by the tracker afterwards (Step II), and the
// differential after that carries FLAG_RESYNC_END: only then is the replica consistent again.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { writeFileDurable } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { FLAG_RESYNC } from '../proto/hrl.js';
import type { HashAnswer, HashQuery } from '../proto/messages.js';
import { leafHashes, rangeHashes } from '../proto/range-hash.js';
import type { Capture } from './capture/capture.js';
import type { Journal } from './journal.js';
import type { DirtyExtent, Tracker } from './trackers/tracker.js';
import type { VolumeReader } from './volume.js';

/** resync: send what differs. verify: only report it. repair: verify, then send what differs. */
export type ResyncMode = 'resync' | 'verify' | 'repair';

/** Blocks per range at each level, coarse to fine (1 MiB, 64 KiB, one block at 4 KiB blocks). */
const LEVELS = [256, 16, 1];
const MAX_EXTENT = 1024 * 1024;
/** Differing blocks are copied out of their window into buffers of at most this (see extents()). */
const COPY_PIECE = 4 * 1024 * 1024;
const REPORT_RANGES = 1000;
/** Ranges per query, so a query's header stays small (its hashes travel as the frame's payload). */
const QUERY_RANGES = 4096;
/** Damaged ranges remembered for a targeted repair; past this, the repair covers the whole volume. */
const MAX_DAMAGED_RANGES = 65536;
/** Windows read and compared ahead of the one being journaled (resync, repair; not a verify or background pass). */
const AHEAD = 2;
/**
 * A window is asked about leaf by leaf, skipping the coarser levels, when the window compared last had at
 * least this share of its blocks differing (an initial replication): 8 bytes of hash per block are then
 * about 1/64 of the data sent or less, and one exchange replaces three or more.
 */
const DIRECT_SHARE = 1 / 8;
/**
 * Window buffers in use at most (the one being journaled and those ahead): fewer ahead for big windows.
 * The differing blocks of the one being journaled are copied out of it: one window's worth at most, which
 * the journal keeps in memory until uploaded (RECENT_BYTES).
 */
const MAX_IN_FLIGHT_BYTES = 256 * 1024 * 1024;

/** Differing blocks next to each other: [volume offset, start and end in the window, length]. */
type Run = [number, number, number, number];

/** A window read, hashed and compared, waiting to be journaled (in order). */
interface Compared {
  first: number;
  count: number;
  /** When its view was taken. */
  atMs: number;
  bytes: number;
  leaves: BigUint64Array;
  differing: number[];
  /** The differing blocks as runs (see runs()). */
  runs: Run[];
  /** The window's bytes, whose runs are copied out when it is journaled; empty for a verify. */
  data: Buffer;
  /** The pass's own buffer that holds data, to read into again once the runs are copied out. */
  buffer: Buffer | undefined;
  /** The pass generation the buffer belongs to (see giveBack). */
  generation: number;
  hashBytes: number;
}

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
  /** Started by the background verify (agent/background-verify.ts), not by an operator or a loss. */
  background: boolean;
  /** Visit only these 1 MiB ranges (ascending indexes), not the whole volume: a repair of what a verify found. */
  only: number[] | null;
  /**
   * Blocks that differ although the tracker holds them as captured unchanged: damage on the replica side,
   * not writes still on their way (those differ too, and the tracker sends them anyway).
   */
  damagedBlocks: number;
  /** The 1 MiB ranges holding those blocks (ascending, capped; null once past the cap: all of them). */
  damagedRanges: number[] | null;
}

export type Ask = (q: Omit<HashQuery, 'requestId'>, hashes: Buffer) => Promise<HashAnswer>;

export class Resync {
  state: ResyncState;
  private readonly file: string;
  readonly blockCount: number;
  private readonly windowBlocks: number;
  /** Windows ahead, in order; the first is the next to journal. */
  private ahead: Array<{ first: number; count: number; result: Promise<Compared> }> = [];
  /** First block of the next window to start; -1: start from the durable cursor. */
  private planned = -1;
  /** after_seq of a window when the pipeline (re)started above what the cursor saw: a window is being redone. */
  private redoSeq = 0;
  /** Bumped whenever the windows ahead are dropped (new pass, failure, close): their results are ignored. */
  private generation = 0;
  /** Windows are read one at a time, in order: a capture (freeze, clone) is never begun twice at once. */
  private reading: Promise<unknown> = Promise.resolve();
  private readonly depth: number;
  /** Share of the blocks that differed in the window compared last (see DIRECT_SHARE). */
  private differingShare = 0;
  /**
   * Window buffers this pass allocated and is done with, read into again (windowBuffer, giveBack). A fresh
   * window is fresh memory: the kernel faults in and zeroes each page on first touch, which cost 5x the
   * read and hash of a warm buffer on a VM.
   */
  private spare: Buffer[] = [];

  constructor(
    dir: string,
    private readonly volumeId: string,
    private readonly sizeBytes: number,
    private readonly blockSize: number,
    private readonly deps: { capture: Capture; tracker: Tracker; journal: Journal; ask: Ask; log: Logger; windowBytes: number; live?: Capture },
  ) {
    // Whole coarse ranges per window, so both sides agree on every range's extent.
    this.windowBlocks = Math.max(LEVELS[0]!, Math.floor(deps.windowBytes / blockSize / LEVELS[0]!) * LEVELS[0]!);
    this.file = path.join(dir, 'resync.json');
    this.blockCount = Math.ceil(sizeBytes / blockSize);
    this.depth = Math.max(0, Math.min(AHEAD, Math.floor(MAX_IN_FLIGHT_BYTES / (this.windowBlocks * blockSize)) - 1));
    this.state = Resync.idle();
  }

  private static idle(): ResyncState {
    return { active: false, mode: 'resync', reason: '', cursorBlock: 0, startedAt: 0, finishedAt: 0, bytesProcessed: 0, bytesSent: 0, hashBytes: 0, differingBlocks: 0, differing: [], endPending: false, baseSeq: 0, cursorSeq: 0, background: false, only: null, damagedBlocks: 0, damagedRanges: [] };
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

  /** A pass that sends (resync, repair) is under way: the replica is a mix until it ends. A verify only reads. */
  get owning(): boolean {
    return this.state.active && this.state.mode !== 'verify';
  }

  /**
   * Start a pass from the beginning. A resync or repair overrides a running verify, not the reverse (false:
   * not started); with `resume`, a resync or repair already running just goes on. An end marker still
   * owed by an earlier pass stays owed.
   */
  async start(mode: ResyncMode, reason: string, opts: { resume?: boolean; background?: boolean; only?: number[] | null } = {}): Promise<boolean> {
    // A background pass gives way to anything asked for; a targeted background repair covers less than a resync.
    const running = this.owning && !this.state.background;
    if (running && (mode === 'verify' || opts.resume)) return false;
    if (opts.only && opts.only.length === 0) return false;
    this.discard();
    this.differingShare = 0;
    this.state = {
      ...Resync.idle(), active: true, mode, reason, startedAt: Date.now(), endPending: this.state.endPending, baseSeq: this.deps.journal.lastSeq, cursorSeq: this.deps.journal.lastSeq,
      background: opts.background ?? false, only: opts.only ?? null,
    };
    if (this.state.only) this.state.cursorBlock = this.state.only[0]! * LEVELS[0]!;
    await this.save();
    if (this.state.background) this.deps.log.info({ volume: this.volumeId, mode, reason, ranges: this.state.only?.length }, `background ${mode} started`);
    else this.deps.log.warn({ volume: this.volumeId, mode, reason }, 'resync started');
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

  /**
   * Journal (resync, repair) or report (verify) the next window, once compared; the windows after it are
   * compared meanwhile. Returns true when the pass is complete.
   */
  async step(): Promise<boolean> {
    const s = this.state;
    const generation = this.generation;
    this.fill();
    const head = this.ahead.shift();
    let w: Compared | null = null;
    if (head) {
      try {
        w = await head.result;
      } catch (e) {
        if (generation === this.generation) this.discard();
        throw e;
      }
      // A new pass replaced this one meanwhile: its windows are not this pass's to journal.
      if (generation !== this.generation) return !this.state.active;
    }
    try {
      await this.commit(s, w);
    } catch (e) {
      if (generation === this.generation) this.discard();
      throw e;
    }
    return !s.active;
  }

  /** Drop the windows ahead (their questions may still be answered; nothing is journaled from them). */
  private discard(): void {
    this.generation++;
    this.spare = [];
    this.ahead = [];
    this.planned = -1;
  }

  /** Stop comparing ahead (agent shutdown) and wait for the windows in flight to end. */
  async close(): Promise<void> {
    const pending = this.ahead.map((a) => a.result);
    this.discard();
    await Promise.allSettled([...pending, this.reading]);
  }

  /** Start windows until the next to journal and `depth` after it are in flight. */
  private fill(): void {
    const s = this.state;
    if (!s.active) return;
    if (this.planned < 0) {
      // (Re)starting from the durable cursor. Anything journaled after it was saved was journaled by the
      // window at the cursor before a crash (or a failure): it must be applied before that window is asked
      // about, or a block changed since could compare equal and then be overwritten by the older data.
      this.planned = s.cursorBlock;
      const last = this.deps.journal.lastSeq;
      this.redoSeq = last > s.cursorSeq ? last : 0;
    }
    const depth = this.depthOf(s);
    while (this.ahead.length < 1 + depth) {
      const next = this.nextWindow(this.planned);
      if (next === null) break;
      const [first, count] = next;
      this.planned = first + count;
      const result = this.compareWindow(s, first, count);
      result.catch(() => {}); // awaited in order by step(), or dropped by discard()
      this.ahead.push({ first, count, result });
    }
  }

  /** Windows compared ahead of the one being journaled: none for a verify or a background pass. */
  private depthOf(s: ResyncState): number {
    return s.mode === 'verify' || s.background ? 0 : this.depth;
  }

  /** Read, hash and compare one window; nothing durable happens here. */
  private async compareWindow(s: ResyncState, first: number, count: number): Promise<Compared> {
    const bs = this.blockSize;
    const generation = this.generation;
    // A background pass reads the live volume: a clone or a freeze per window would cost the application
    // more than the pass is worth, and blocks written meanwhile are told apart by the tracker (countDamage).
    const capture = s.background ? this.deps.live ?? this.deps.capture : this.deps.capture;
    let into: Buffer | undefined;
    const read = this.reading.then(async () => {
      // Dropped (discard) before its turn to read: neither a capture nor a buffer for it.
      if (generation !== this.generation) throw tmError('TM_ERR_CLOSED', 'resync window dropped before it was read');
      const captured = await capture.begin();
      try {
        into = this.windowBuffer(captured.view, s);
        const data = await captured.view.read(first * bs, Math.min(count * bs, this.sizeBytes - first * bs), into);
        // Read: a frozen filesystem is thawed now, not held through the exchange with the replica.
        await captured.settle?.();
        return { data, atMs: captured.atMs };
      } finally {
        await captured.release();
      }
    });
    this.reading = read.catch(() => {});
    // The window's buffer (when this pass owns it) is read into again once nothing refers to it: after a
    // failure here, or once its differing blocks are copied out as it is journaled (commit).
    try {
      const { data, atMs } = await read;
      const leaves = leafHashes(data, bs);
      // The replica must be asked about after every differential that may touch this window. A resync or
      // repair owns the volume (no scanning), and its own windows cover other blocks: only what came before
      // the pass matters, so windows need not wait for each other's apply. Except windows redone after a
      // crash (redoSeq, see fill). A verify runs beside scanning, whose differentials may touch any block:
      // it waits for all of them.
      const afterSeq = s.mode === 'verify' ? this.deps.journal.lastSeq : this.redoSeq || s.baseSeq;
      const { differing, hashBytes } = await this.compare(first, count, leaves, afterSeq, s.mode !== 'resync');
      const runs = this.runs(differing, first, data.length);
      // A verify reports the runs only: its window's memory is left to the collector now.
      const kept = s.mode === 'verify' ? Buffer.alloc(0) : data;
      return { first, count, atMs, bytes: data.length, leaves, differing, runs, data: kept, buffer: into, generation, hashBytes };
    } catch (e) {
      this.giveBack(into, s, generation);
      throw e;
    }
  }

  /**
   * A buffer of this pass's own to read a window into, or none: the reader allocates its own (a block
   * device's aligned direct read), or the pass reads no window ahead (a verify or background pass, which
   * runs for hours at a throttled pace and should hold no window between its steps).
   */
  private windowBuffer(view: VolumeReader, s: ResyncState): Buffer | undefined {
    if (view.readsInto !== true || this.depthOf(s) === 0) return undefined;
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.windowBlocks * this.blockSize);
  }

  /**
   * A window buffer back to the spares, if its window belongs to the pass running now (not one dropped by
   * discard: a new pass, a failure, close). Buffers are allocated only when no spare is left, so this
   * pass's buffers never outnumber the windows it has in flight at once (1 + depth).
   */
  private giveBack(buf: Buffer | undefined, s: ResyncState, generation: number): void {
    if (!buf || generation !== this.generation || s !== this.state || !s.active) return;
    if (this.spare.length < 1 + this.depthOf(s)) this.spare.push(buf);
  }

  /** The window compared: journal (or report) what differs, adopt its baseline, advance the cursor durably. */
  private async commit(s: ResyncState, w: Compared | null): Promise<void> {
    if (w) {
      if (s.background && w.differing.length > 0) await this.countDamage(w.first, w.leaves, w.differing);
      if (s.mode === 'verify') {
        for (const [offset, , , length] of w.runs) if (s.differing.length < REPORT_RANGES) s.differing.push([offset, length]);
      } else {
        // Copied out only now, so the windows compared ahead hold no copies beside their buffers.
        const extents = this.extents(w.runs, w.data);
        this.giveBack(w.buffer, s, w.generation);
        if (extents.length > 0) {
          await this.deps.journal.write({ startTimeMs: w.atMs, endTimeMs: Date.now(), consistency: 'FUZZY', tags: [], flags: FLAG_RESYNC }, extents);
          s.bytesSent += extents.reduce((n, e) => n + e.length, 0);
        }
        // The replica now holds (or will, once that differential is applied) what was read here.
        await this.deps.tracker.adoptBaseline(w.first, w.leaves);
      }
      s.differingBlocks += w.differing.length;
      s.hashBytes += w.hashBytes;
      s.bytesProcessed += w.bytes;
      s.cursorBlock = w.first + w.count;
    } else {
      s.cursorBlock = this.blockCount; // no window left
    }
    // A targeted pass is done once no listed range is left past the cursor.
    if (s.only && !s.only.some((r) => (r + 1) * LEVELS[0]! > s.cursorBlock)) s.cursorBlock = this.blockCount;
    s.cursorSeq = this.deps.journal.lastSeq;
    if (s.cursorBlock >= this.blockCount) {
      s.active = false;
      this.spare = []; // an idle agent holds no window memory
      s.endPending ||= s.mode !== 'verify';
      s.finishedAt = Date.now();
      this.deps.log.info({ volume: this.volumeId, mode: s.mode, differingBlocks: s.differingBlocks, bytesSent: s.bytesSent, hashBytes: s.hashBytes, ms: s.finishedAt - s.startedAt }, 'resync pass complete');
    }
    await this.save();
  }

  /**
   * The blocks of the window starting at `from` (null past the last): a window, or in a targeted pass the
   * next listed ranges (neighbours joined, up to a window), so nothing outside them is read or adopted.
   */
  private nextWindow(from: number): [number, number] | null {
    const s = this.state;
    const coarse = LEVELS[0]!;
    if (from >= this.blockCount) return null;
    if (!s.only) return [from, Math.min(this.windowBlocks, this.blockCount - from)];
    let k = s.only.findIndex((r) => (r + 1) * coarse > from);
    if (k < 0) return null;
    const first = Math.max(from, s.only[k]! * coarse);
    let end = (s.only[k]! + 1) * coarse;
    while (k + 1 < s.only.length && s.only[k + 1] === s.only[k]! + 1 && end + coarse - first <= this.windowBlocks) {
      k++;
      end += coarse;
    }
    return [first, Math.min(end, this.blockCount) - first];
  }

  /**
   * Of the differing blocks, count those the tracker holds as captured with exactly the contents just read:
   * the replica should hold them, so they are damage. Others are writes on their way (not yet journaled or
   * applied), which the tracker sends; a background pass must not call them damage.
   */
  private async countDamage(first: number, leaves: BigUint64Array, differing: number[]): Promise<void> {
    const s = this.state;
    const settled = await this.deps.tracker.settled?.(first, leaves);
    for (const b of differing) {
      if (settled && !settled[b - first]) continue;
      s.damagedBlocks++;
      const r = Math.floor(b / LEVELS[0]!);
      if (s.damagedRanges === null || s.damagedRanges.at(-1) === r) continue;
      if (s.damagedRanges.length >= MAX_DAMAGED_RANGES) s.damagedRanges = null;
      else s.damagedRanges.push(r);
    }
  }

  /**
   * Coarse to fine: the block indexes in the window whose contents differ from the replica's. The queries
   * of one level go out together. Where the windows just compared differed for much of their blocks (an
   * initial replication), the leaves are asked about at once: one exchange instead of three, for hash
   * bytes still small beside the data that follows (DIRECT_SHARE).
   */
  private async compare(first: number, count: number, leaves: BigUint64Array, afterSeq: number, reread: boolean): Promise<{ differing: number[]; hashBytes: number }> {
    let hashBytes = 0;
    const direct = !reread && this.differingShare >= DIRECT_SHARE;
    let level = direct ? LEVELS.length - 1 : 0;
    let candidates: number[] = [];
    for (let i = Math.floor(first / LEVELS[level]!); i * LEVELS[level]! < first + count; i++) candidates.push(i);
    for (; level < LEVELS.length && candidates.length > 0; level++) {
      const rangeBlocks = LEVELS[level]!;
      // Only the coarsest level re-reads the replica: that reads every block once and corrects its hashes.
      const asks: Promise<HashAnswer>[] = [];
      for (let i = 0; i < candidates.length; i += QUERY_RANGES) {
        const ranges = candidates.slice(i, i + QUERY_RANGES);
        const hashes = rangeHashes(leaves, ranges, rangeBlocks, first);
        hashBytes += hashes.length + ranges.length * 4;
        asks.push(this.deps.ask({ volumeId: this.volumeId, rangeBlocks, ranges, afterSeq, reread: reread && level === 0 }, hashes));
      }
      // All answered (or failed) before going on: a failure is raised once the others are settled.
      const answers = await Promise.allSettled(asks);
      const failed = answers.find((a): a is PromiseRejectedResult => a.status === 'rejected');
      if (failed) throw failed.reason;
      const differ = answers.flatMap((a) => (a as PromiseFulfilledResult<HashAnswer>).value.differing);
      hashBytes += differ.length * 4;
      const next = LEVELS[level + 1];
      if (next === undefined) {
        this.differingShare = count === 0 ? 0 : differ.length / count;
        return { differing: differ, hashBytes };
      }
      const per = rangeBlocks / next;
      candidates = differ.flatMap((r) => Array.from({ length: per }, (_, k) => r * per + k)).filter((c) => c * next < first + count);
    }
    this.differingShare = 0;
    return { differing: [], hashBytes };
  }

  /**
   * Differing blocks as runs of neighbours of at most MAX_EXTENT bytes: [volume offset, start and end in
   * the window, length] (the last block of the volume may be short).
   */
  private runs(blocks: number[], first: number, windowBytes: number): Run[] {
    const out: Run[] = [];
    const bs = this.blockSize;
    let i = 0;
    while (i < blocks.length) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && (j - i + 1) * bs <= MAX_EXTENT) j++;
      const start = (blocks[i]! - first) * bs;
      const end = Math.min(start + (j - i) * bs, windowBytes);
      out.push([blocks[i]! * bs, start, end, end - start]);
      i = j;
    }
    return out;
  }

  /**
   * The runs as extents, their data copied out of the window into pieces of at most COPY_PIECE bytes, so
   * the window is read into again at once. Views of the window would save the copy (~0.1 ms per MiB) but
   * hold it until the differential is acknowledged, and make every window fresh memory: a page fault per
   * 4 KiB (~15 µs on a VM), 40 times the copy. Pieces are small enough to come from the heap, where freed
   * memory is reused warm.
   */
  private extents(runs: Run[], data: Buffer): DirtyExtent[] {
    const out: DirtyExtent[] = [];
    let piece = Buffer.alloc(0);
    let at = 0;
    let left = runs.reduce((n, r) => n + r[3], 0);
    for (const [offset, start, end, length] of runs) {
      if (piece.length - at < length) {
        piece = Buffer.allocUnsafe(Math.max(length, Math.min(COPY_PIECE, left)));
        at = 0;
      }
      const slice = piece.subarray(at, at + data.copy(piece, at, start, end));
      at += slice.length;
      left -= length;
      out.push({ offset, length: slice.length, data: slice, crc32c: crc(slice) });
    }
    return out;
  }

  progress(): Record<string, unknown> {
    const s = this.state;
    const total = this.sizeBytes;
    const done = Math.min(total, s.cursorBlock * this.blockSize);
    const elapsed = (s.finishedAt || Date.now()) - s.startedAt;
    const etaMs = s.active && s.bytesProcessed > 0 ? Math.round((elapsed / s.bytesProcessed) * (total - done)) : 0;
    return { ...s, only: s.only?.length ?? null, damagedRanges: s.damagedRanges?.length ?? null, percent: total === 0 ? 100 : Math.round((done / total) * 1000) / 10, etaMs, differing: s.differing.slice(0, 50), differingRanges: s.differing.length };
  }
}
