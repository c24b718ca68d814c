// One protected volume on the agent: each cycle captures a view, asks the tracker for dirty extents and
// writes them to the journal as one differential. The uploader (proto/sender.ts) takes it from there.
import type { Logger } from '../common/log.js';
import type { Diff } from '../proto/hrl.js';
import { FLAG_RESYNC_END } from '../proto/hrl.js';
import type { OpenVolume } from '../proto/messages.js';
import type { OutboundVolume } from '../proto/sender.js';
import type { BackgroundVerify } from './background-verify.js';
import { monotonicMs } from './cadence.js';
import type { Capture, CapturedView } from './capture/capture.js';
import type { Journal } from './journal.js';
import type { Resync } from './resync.js';
import type { Tracker } from './trackers/tracker.js';
import type { Volume } from './volume.js';

export interface PointInfo {
  seq: number;
  atMs: number;
  tags: string[];
}

/** A view a consistency group (agent/group.ts) took of this volume with its other members, and its tag. */
export interface GroupCut {
  captured: CapturedView;
  tag: string;
}

export interface CycleResult {
  seq: number | null;
  bytes: number;
  more: boolean;
}

/**
 * data: differentials are journaled every cycle. bitmap: the journal is over its quota or the process
 * server has been unreachable too long, so only the tracker's dirty map is kept (on disk); it drains into
 * differentials once there is room, with no resync (after InMage's data and bitmap modes).
 */
export type ReplicationMode = 'data' | 'bitmap';

export interface ReplicatorOptions {
  maxDiffBytes: number;
  journalQuotaBytes: number;
  cycleIntervalMs: number;
  /** Unreachable process server for this long: stop journaling data (bitmap mode). */
  bitmapAfterMs: number;
  /** How long the process server has been unreachable (0 when connected). */
  unreachableMs: () => number;
  log: Logger;
}

/** Leave bitmap mode only once the journal is this far below its quota, so modes do not flap. */
const RESUME_FRACTION = 0.75;

export class VolumeReplicator implements OutboundVolume {
  lastCycleAt = 0;
  /** When lastCycleAt was set, on the monotonic clock: intervals are timed by it, not by the wall clock. */
  private lastCycleMono = -Infinity;
  lastCycleBytes = 0;
  mode: ReplicationMode = 'data';
  modeReason = '';
  modeSince = Date.now();
  readonly points = { crash: null as PointInfo | null, app: null as PointInfo | null };
  /** A snapshot held while its point spans several differentials (with its group tag, if any). */
  private held: { captured: CapturedView; tag: string | null } | null = null;

  constructor(
    readonly volumeId: string,
    readonly volume: Volume,
    readonly tracker: Tracker,
    readonly capture: Capture,
    readonly journal: Journal,
    readonly resync: Resync,
    private readonly opts: ReplicatorOptions,
    readonly verifier: BackgroundVerify | null = null,
  ) {}

  /** Decide between data and bitmap mode before each cycle. */
  private chooseMode(): ReplicationMode {
    const { journalQuotaBytes: quota, bitmapAfterMs } = this.opts;
    const unreachable = this.opts.unreachableMs();
    let reason = '';
    if (this.journal.bytes >= quota) reason = `journal quota reached (${this.journal.bytes} of ${quota} bytes)`;
    else if (this.mode === 'bitmap' && this.modeReason.startsWith('journal') && this.journal.bytes > quota * RESUME_FRACTION) reason = this.modeReason;
    else if (unreachable >= bitmapAfterMs) reason = `process server unreachable for ${Math.round(unreachable / 1000)} s`;
    const mode: ReplicationMode = reason ? 'bitmap' : 'data';
    if (mode !== this.mode) {
      if (mode === 'bitmap') this.opts.log.warn({ volume: this.volumeId, reason }, 'bitmap mode: keeping only the dirty map until there is room');
      else this.opts.log.info({ volume: this.volumeId, after: this.modeReason }, 'data mode: draining the dirty map');
      this.mode = mode;
      this.modeSince = Date.now();
    }
    this.modeReason = reason;
    return mode;
  }

  async cycle(): Promise<CycleResult> {
    return (await this.solo()) ?? this.captureCycle(null);
  }

  /**
   * The parts of a cycle that take no new view: nothing in bitmap mode, a resync step, the next part of a
   * point in progress. Null when a new view is due; a consistency group takes it for all its members.
   */
  async solo(): Promise<CycleResult | null> {
    // In bitmap mode the tracker keeps every written block dirty (blocktrace: in its persisted map; scan:
    // by hash); they are captured once the journal drains.
    if (this.chooseMode() === 'bitmap') return { seq: null, bytes: 0, more: false };
    await this.verifier?.maybeStart();
    if (this.resync.active && !this.verifier?.resting) {
      // A point in progress is moot once a resync or repair sends blocks; a verify only reads.
      if (this.resync.owning) await this.close();
      const before = this.journal.lastSeq;
      const read = this.resync.state.bytesProcessed;
      const done = await this.resync.step();
      await this.verifier?.stepped(this.resync.state.bytesProcessed - read, done);
      // A resync owns the volume until it is done. A verify sends nothing, so scanning goes on beside it,
      // at its usual interval rather than once per verified window.
      const verifying = this.resync.active && this.resync.state.mode === 'verify';
      if (!verifying || monotonicMs() - this.lastCycleMono < this.opts.cycleIntervalMs) {
        return { seq: this.journal.lastSeq > before ? this.journal.lastSeq : null, bytes: 0, more: true };
      }
    }
    return this.held ? this.captureCycle(null) : null;
  }

  /** A point in progress: its snapshot is held until every block dirty at its instant is journaled. */
  get holding(): boolean {
    return this.held !== null;
  }

  /**
   * Something to capture (call after tracker.beforeCapture): dirty blocks, a resync end or a point owed.
   * Without, no snapshot is taken (a clone or a freeze costs the application I/O; an idle volume should
   * not pay it every cycle).
   */
  owesCapture(): boolean {
    return this.tracker.dirtyBlocks !== 0 || this.resync.state.endPending || this.changedSinceLastPoint();
  }

  /** A cycle that found nothing to capture. */
  idle(): CycleResult {
    this.lastCycleAt = Date.now();
    this.lastCycleMono = monotonicMs();
    this.lastCycleBytes = 0;
    return { seq: null, bytes: 0, more: false };
  }

  /**
   * Journal the view a consistency group took (tracker.beforeCapture ran before it, and solo() returned
   * null). The differential that completes the point carries the group's tag, also when it is empty: the
   * master target pairs the members' points by it.
   */
  captureCut(cut: GroupCut): Promise<CycleResult> {
    return this.captureCycle(cut);
  }

  private async captureCycle(cut: GroupCut | null): Promise<CycleResult> {
    // A snapshot whose point did not fit in one differential is read on until the point is complete.
    const cont = this.held !== null;
    let captured = this.held?.captured ?? cut?.captured ?? null;
    const groupTag = this.held ? this.held.tag : cut?.tag ?? null;
    this.held = null;
    if (!captured) {
      await this.tracker.beforeCapture?.();
      if (!this.owesCapture()) return this.idle();
      captured = await this.capture.begin();
    }
    let point: number | undefined;
    let keep = false;
    try {
      const startMs = this.lastCycleAt || captured.atMs;
      // A view cut by a marker in the data-mode write stream (data-freeze.ts) is the stream up to that
      // marker: slices before it are CRASH points, the one ending at it carries the view's class and tags.
      const streamed = captured.streamMark !== undefined;
      const col = await this.tracker.collect(captured.view, this.opts.maxDiffBytes, cont, captured.streamMark);
      const reached = !streamed || col.marked === true;
      const intact = (await captured.settle?.()) ?? true;
      // A recovery point only if this differential completes the view: every dirty block read from it,
      // the view consistent throughout, and no resync making the replica a mix of old and new.
      const ending = this.resync.state.endPending && !col.more;
      // A data-mode slice (col.point) is a point on its own, also when more of the stream follows.
      const whole = (!col.more || col.point === true) && intact && !this.resync.owning && (!this.resync.state.endPending || ending) && (!streamed || col.point === true);
      const consistency = whole ? (col.point === true && (captured.consistency === 'FUZZY' || !reached) ? 'CRASH' : captured.consistency) : 'FUZZY';
      // A group's tag only on its cut: a data-mode slice of a view the group did not cut (FUZZY) is a CRASH
      // point of this volume alone.
      const tags = consistency === 'FUZZY' || !reached ? [] : groupTag && captured.consistency !== 'FUZZY' ? [...captured.tags, groupTag] : captured.tags;
      let seq: number | null = null;
      // A consistent view with nothing new is still journaled (empty) when the last differential was fuzzy:
      // it turns the replica's current state into a recovery point. So is a stream marker's app point.
      if (col.extents.length > 0 || ending || (consistency !== 'FUZZY' && (groupTag !== null || this.changedSinceLastPoint() || (streamed && reached)))) {
        seq = await this.journal.write({ startTimeMs: startMs, endTimeMs: captured.atMs, consistency, tags, flags: ending ? FLAG_RESYNC_END : 0 }, col.extents);
        await col.commit(); // only now are these blocks clean: the journal holds them durably
        if (ending) await this.resync.ended();
        if (consistency !== 'FUZZY') {
          point = seq;
          this.points[consistency === 'APP' ? 'app' : 'crash'] = { seq, atMs: captured.atMs, tags };
        }
        this.opts.log.debug({ volume: this.volumeId, seq, bytes: col.bytes, extents: col.extents.length, consistency }, 'differential journaled');
      }
      keep = (col.more && seq !== null && captured.lasting === true && intact && captured.consistency !== 'FUZZY') || !reached;
      if (!keep) {
        this.lastCycleAt = captured.atMs;
        this.lastCycleMono = monotonicMs();
      }
      this.lastCycleBytes = col.bytes;
      return { seq, bytes: col.bytes, more: col.more };
    } finally {
      if (keep) this.held = { captured, tag: groupTag };
      else await captured.release(point);
    }
  }

  /** Let go of a snapshot held for a point in progress (at shutdown). */
  async close(): Promise<void> {
    const h = this.held;
    this.held = null;
    await h?.captured.release();
  }

  /** An empty crash point repeats the last point; only the first after a fuzzy differential is worth sending. */
  private changedSinceLastPoint(): boolean {
    return Math.max(this.points.crash?.seq ?? 0, this.points.app?.seq ?? 0) !== this.journal.lastSeq;
  }

  // OutboundVolume: what the uploader needs.
  async describe(): Promise<Omit<OpenVolume, 'volumeId'>> {
    const lineage = await this.journal.session();
    return { sizeBytes: this.journal.state.sizeBytes, blockSize: this.journal.state.blockSize, replicationId: this.journal.state.replicationId, ...lineage };
  }

  opened(): Promise<void> {
    return this.journal.confirm();
  }

  /**
   * The process server asks for a resync. On a regression (this state is not a continuation of what it
   * holds), what the journal holds is set aside and numbering goes on above the process server's: the
   * resync is started (durably) first, so a crash in between repeats the exchange rather than losing it.
   */
  async resyncNeeded(reason: string, regression: boolean, durableSeq: number): Promise<void> {
    const why = regression ? `TM_ERR_SOURCE_REGRESSED: ${reason}` : reason;
    if (!regression) {
      await this.resync.start('resync', why);
      return;
    }
    this.opts.log.error({ volume: this.volumeId, code: 'TM_ERR_SOURCE_REGRESSED', durableSeq, lastSeq: this.journal.lastSeq, err: reason }, 'agent state regressed; setting the journal aside and resyncing');
    await this.resync.start('resync', why);
    const moved = await this.journal.rebase(durableSeq);
    await this.resync.start('resync', why); // again, from the new numbering
    this.opts.log.warn({ volume: this.volumeId, superseded: moved, nextSeq: this.journal.nextSeq }, 'journal set aside; numbering goes on after the process server');
  }

  async pending(): Promise<number[]> {
    return this.journal.pending();
  }

  load(seq: number): Promise<Diff> {
    return this.journal.load(seq, async (ranges) => {
      // Unknown blocks lost: a pass under way may already count them clean, so start over from block 0.
      if (ranges === null) await this.resync.start('resync', 'damaged journal file');
      else await this.tracker.invalidate(ranges);
    });
  }

  acked(seq: number): Promise<void> {
    return this.journal.acked(seq);
  }

  status(): Record<string, unknown> {
    return {
      id: this.volumeId,
      path: this.volume.path,
      sizeBytes: this.volume.sizeBytes,
      tracker: this.tracker.kind,
      capture: this.capture.kind,
      mode: this.mode,
      modeReason: this.modeReason,
      modeSince: this.modeSince,
      dirtyBlocks: this.tracker.dirtyBlocks ?? null,
      trackerStats: this.tracker.stats ?? null,
      captureStats: this.capture.stats ?? null,
      resync: this.resync.progress(),
      consistentAfterResync: !this.resync.owning && !this.resync.state.endPending,
      verify: this.verifier?.status() ?? null,
      lastSeq: this.journal.lastSeq,
      ackedSeq: this.journal.state.ackedSeq,
      journalFiles: this.journal.pending().length,
      journalBytes: this.journal.bytes,
      lastCycleAt: this.lastCycleAt,
      lastCycleBytes: this.lastCycleBytes,
      lastCrashPoint: this.points.crash,
      lastAppPoint: this.points.app,
    };
  }
}
