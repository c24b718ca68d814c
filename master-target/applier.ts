// Applies one volume's staged differentials to its replica, strictly in sequence order.
//
// Crash safety is redo-based: a differential is staged durably (.hrl, fsync'd) before any replica
// block is touched, and is marked applied (state.json doneSeq, fsync'd) only after the replica is
// fsync'd. A crash in between leaves the staged file in place, and open() applies it again from the
// start; rewriting the same bytes at the same offsets is idempotent, so the replica ends exactly at
// that differential's boundary before anything else happens. Every extent is decompressed and checked
// against its source checksum before the first write, so a damaged differential changes nothing.
// Group commit: the differentials staged when the applier looks are applied in order and made durable
// together (one replica fsync, one hash-table save, one state write for all), then acknowledged; a crash
// re-applies the whole group. A group's commit runs while the next group is written (pipelined; the
// argument is at commit()). The extents of a differential go to the replica many per call (writeMany).
// Retention: a group's differentials are held (loaded, verified) while their before-images are made, then
// written together once every segment is durable (drain's flush; the argument is in before-images.ts).
import { extentPool } from '../common/buffer-pool.js';
import { tmError, isCorruption, isTidemarkError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { currentPoint, type RecoveryPoint, type MtStore } from './volume-state.js';
import { DECOMPRESS_INLINE_BELOW, rawData, rawDataAsync } from '../proto/extent-codec.js';
import { extentsOf, FLAG_RESYNC, FLAG_RESYNC_END, type StoredDiff } from '../proto/hrl.js';
import { checkExtent } from '../proto/limits.js';
import type { ReplicaHashes } from './replica-hashes.js';
import { segmentEstimate, type BeforeImageBatch } from './retention/before-images.js';
import type { RetentionLog } from './retention/retention-log.js';
import type { Replica } from './replica.js';

/** A group commit takes at most this many staged differentials, or about this many bytes of them. */
const GROUP_DIFFS = 16;
const GROUP_BYTES = 64 << 20;
/** A group of differentials written and being made durable together. */
/** A differential loaded and checked (`raws`: its extents' data, when held in memory). */
interface Held { seq: number; diff: StoredDiff; point: RecoveryPoint | null; resyncing: boolean; raws: Buffer[] | null }
/** Differentials written, to be made durable together. */
type Committing = Held[];
/** A group's commit running while the next group is written. */
interface InFlight { done: Promise<boolean>; settled: boolean; error: unknown }
/** A differential read from its file is written this many bytes of extents per call. */
const WRITE_BATCH_BYTES = 8 << 20;

export interface ApplierStats {
  /** False while a checksum resync is under way (between FLAG_RESYNC and FLAG_RESYNC_END). */
  consistent: boolean;
  appliedSeq: number;
  appliedBytes: number;
  lastAppliedAt: number;
  /** Age of the newest applied data when it was applied: the replication lag. */
  lagMs: number;
  lastConsistency: string;
  lastError: string | null;
}

export class Applier {
  readonly stats: ApplierStats;
  private running: Promise<void> | null = null;
  private again = false;
  private closed = false;
  private paused: Promise<unknown> | null = null;
  private waiters: Array<{ seq: number; resolve: () => void }> = [];
  /** exclusive() callers waiting: the apply loop yields to them between differentials. */
  private exclusiveWanted = 0;
  /** drain() waiting, while a group commits, for more differentials to add to the next group: kick() wakes it. */
  private wake: (() => void) | null = null;

  constructor(
    readonly volumeId: string,
    private readonly store: MtStore,
    private readonly replica: Replica,
    readonly hashes: ReplicaHashes,
    private readonly hooks: {
      applied(seq: number): void;
      /** Drop the sender's connection; resolves once what it had read is committed (proto/receiver.ts dropVolume). */
      damaged(seq: number): Promise<void>;
      /** The replica's path names another file or device than the one open: this applier has stopped for good. */
      replaced?(how: string): void;
      point?(p: RecoveryPoint): Promise<void>;
      /** point() reads the replica (a snapshot clones it): a group of differentials ends at each point. */
      pointTakesReplica?: boolean;
    },
    private readonly log: Logger,
    readonly retention: RetentionLog | null = null,
  ) {
    this.stats = { consistent: !store.state?.resyncing, appliedSeq: store.doneSeq, appliedBytes: 0, lastAppliedAt: 0, lagMs: 0, lastConsistency: '', lastError: null };
  }

  /** Apply whatever is staged; calls made while running fold into one more pass. */
  kick(): Promise<void> {
    if (this.running) {
      this.again = true;
      this.wake?.();
      return this.running;
    }
    this.running = (async () => {
      await this.paused;
      do {
        this.again = false;
        await this.drain();
      } while (this.again && !this.closed);
    })().finally(() => { this.running = null; });
    return this.running;
  }

  private async drain(): Promise<void> {
    // Group commit, pipelined: the differentials staged now are applied one after another (with retention,
    // loaded first and written once the before-images of all of them are durable: RetentionLog.batch,
    // retention/before-images.ts), then made durable together by commit(): one replica
    // fsync, one table save, one state write, then the ack. While a group commits, the next one is loaded,
    // verified and written (see "Overlap" at commit). A crash re-applies everything from doneSeq + 1.
    let inflight: InFlight | null = null;
    /** The previous group's commit: true when it succeeded; false when the replica was found replaced. */
    const settle = async (): Promise<boolean> => {
      const c = inflight;
      inflight = null;
      return c ? c.done : true;
    };
    // Where the differentials written so far (committed or not) leave the replica.
    let next = this.store.doneSeq + 1;
    let resyncing = this.store.state?.resyncing ?? false;
    let base = currentPoint(this.store.state);
    /** The newest point given in this pass (its group may not be committed yet): capture times never go back. */
    let newest: RecoveryPoint | null = null;
    try {
      while (!this.closed && this.exclusiveWanted === 0) {
        const group: Committing = [];
        let bytes = 0;
        let damaged = 0;
        let holdReplica = false;
        // Loaded and checked, their before-images under way (retention), not yet written: see flush.
        let held: Held[] = [];
        let batch: BeforeImageBatch | null = null;
        /** The held differentials onto the replica, their before-images durable first (all at once). */
        const flush = async (): Promise<void> => {
          const b = batch;
          batch = null;
          if (b) await b.durable();
          const out = held;
          held = [];
          for (const h of out) {
            await this.writeExtents(h.diff, h.raws, h.seq);
            group.push(h);
          }
        };
        try {
          while (!this.closed && this.exclusiveWanted === 0 && !inflight?.error && group.length + held.length < GROUP_DIFFS && bytes < GROUP_BYTES) {
            const seq = next + group.length + held.length;
            if (!this.store.pending().includes(seq)) {
              // The previous group still commits: what is staged meanwhile joins this group (what is held
              // is written first, so it is not kept waiting for the commit).
              if (inflight && !inflight.settled) {
                await flush();
                await Promise.race([inflight.done.catch(() => {}), new Promise<void>((resolve) => (this.wake = resolve))]);
                this.wake = null;
                continue;
              }
              break;
            }
            const loaded = await this.loadChecked(seq);
            if (!loaded) {
              damaged = seq;
              break;
            }
            const { diff, raws } = loaded;
            const flags = diff.header.flags;
            const wasResyncing = resyncing;
            resyncing = flags & FLAG_RESYNC_END ? false : flags & FLAG_RESYNC ? true : resyncing;
            // A recovery point only where the whole replica is at the source's captured instant.
            const c = diff.header.consistency;
            const point: RecoveryPoint | null = !resyncing && c !== 'FUZZY' ? { seq, atMs: this.captureTime(seq, diff.header.endTimeMs, newest), consistency: c, tags: diff.header.tags, appliedAt: Date.now() } : null;
            // A seed still being hashed (ReplicaHashes.seed): the blocks written here first, or the entries
            // recorded below would be overwritten by hashes of the data from before.
            const bs = this.hashes.blockSize;
            await this.hashes.ready(diff.extents.reduce((end, e) => Math.max(end, Math.ceil((e.offset + e.length) / bs)), 0));
            // Not a byte more through a descriptor whose file the path no longer names (docs/OPERATIONS.md).
            if (group.length + held.length === 0 && (await this.stale())) return;
            if (this.retention) {
              // A differential whose data is not held in memory cannot give a later one its before-images:
              // the batch so far is written first, and this one goes alone.
              if (!raws && held.length > 0) await flush();
              batch ??= this.retention.batch(this.replica, this.hashes.hashes);
              // Before the first recovery point (the initial sync) there is no point to go back to: nothing kept.
              const keep = batch.keeps(base);
              // Pause mode: this one's segment, and those of the batch not yet in place, must fit.
              if (keep && !this.admit(batch.unplaced + segmentEstimate(diff.extents))) {
                resyncing = wasResyncing;
                break;
              }
              await batch.add(seq, diff.extents, raws, base, point, keep);
            }
            held.push({ seq, diff, raws, point, resyncing });
            bytes += diff.dataBytes;
            base = point;
            if (point) newest = point;
            if (!this.retention || !raws) await flush();
            // A point snapshot clones the replica: it must be at that point, so the group ends there, and
            // nothing more is written until its commit (which takes the snapshot) is over.
            if (point && this.hooks.pointTakesReplica) {
              holdReplica = true;
              break;
            }
          }
          await flush();
        } catch (e) {
          // Nothing held is written: a redo applies it (and keeps what of its before-images got into place).
          await (batch as BeforeImageBatch | null)?.abandon();
          throw e;
        }
        // One commit at a time, in sequence order; a group whose predecessor failed is not committed.
        if (!(await settle())) return;
        if (group.length > 0) {
          next = group.at(-1)!.seq + 1;
          const c: InFlight = { done: this.commit(group), settled: false, error: null };
          c.done.then(() => { c.settled = true; }, (e: unknown) => { c.settled = true; c.error = e ?? new Error('commit failed'); });
          inflight = c;
          if ((holdReplica || damaged || this.closed || this.exclusiveWanted > 0) && !(await settle())) return;
        }
        if (damaged) {
          // The sender's connection first, its commits over: one committed after the discard would leave
          // a hole in the staged sequence that no retransmission fills (it would be taken as a duplicate).
          await this.hooks.damaged(damaged);
          await this.store.discardFrom(damaged);
          return;
        }
        if (group.length === 0) return;
      }
    } finally {
      // Never over with a commit still running: close() and exclusive() wait for this pass only. Its error
      // (when this pass failed on its own) was the first; the next pass re-applies from doneSeq + 1 anyway.
      const c = inflight as InFlight | null;
      if (c) await c.done.catch((e: unknown) => this.log.error({ volume: this.volumeId, err: (e as Error).message }, 'group commit failed'));
    }
  }

  /**
   * Load staged differential `seq` and check it whole (geometry, every extent's data against its checksum)
   * before any of it is written. Damaged: null, logged (the caller discards it and what follows, so the
   * process server, which keeps its copy until we acknowledge the apply, sends it again).
   */
  private async loadChecked(seq: number): Promise<{ diff: StoredDiff; raws: Buffer[] | null } | null> {
    // Raw data of every extent when the differential is held in memory; a large one is verified here
    // extent by extent and read again from its file while it is applied (proto/hrl.ts IN_MEMORY_BYTES).
    try {
      const diff = await this.store.load(seq);
      if (diff.header.volumeId !== this.volumeId || diff.header.seq !== seq) {
        throw tmError('TM_ERR_HRL_CORRUPT', `staged file ${seq} names volume ${diff.header.volumeId} seq ${diff.header.seq}`, { volume: this.volumeId, seq });
      }
      // Checked by the receiver too; a file staged before that check must not grow or wedge the replica.
      const geometry = { volumeSize: this.store.state?.sizeBytes ?? 0, blockSize: this.store.state?.blockSize ?? 0 };
      for (const e of diff.extents) checkExtent(e, geometry, this.volumeId, seq);
      if ('file' in diff) {
        for await (const e of extentsOf(diff)) await rawDataAsync(e, e.data, this.volumeId, seq);
        return { diff, raws: null };
      }
      // Small or uncompressed extents on the spot; only large LZ4 ones go to the pool (rawDataAsync).
      // Every byte is checked here, the last hop before the replica, even when a crc of it was taken on
      // receipt: held in memory meanwhile, it could have been changed since.
      const raws = diff.extents.map((e) => (e.compression !== 'LZ4' || e.length < DECOMPRESS_INLINE_BELOW ? rawData(e, e.data, this.volumeId, seq) : null));
      await Promise.all(raws.map(async (r, i) => { if (!r) raws[i] = await rawDataAsync(diff.extents[i]!, diff.extents[i]!.data, this.volumeId, seq); }));
      return { diff, raws: raws as Buffer[] };
    } catch (e) {
      if (!isCorruption(e) && !(isTidemarkError(e) && e.code === 'TM_ERR_EXTENT_BOUNDS')) throw e;
      this.stats.lastError = `${e.code}: ${e.message}`;
      this.log.error({ volume: this.volumeId, seq, code: e.code, err: e.message }, 'damaged staged differential discarded; asking for retransmission');
      return null;
    }
  }

  /** The differential's extents onto the replica, in order, many per call; the hash table follows them. */
  private async writeExtents(diff: StoredDiff, raws: Buffer[] | null, seq: number): Promise<void> {
    if (raws) {
      await this.replica.writeMany(diff.extents.map((e) => e.offset), raws);
      diff.extents.forEach((e, i) => this.hashes.update(e.offset, raws[i]!));
      return;
    }
    let offsets: number[] = [];
    let data: Buffer[] = [];
    let pending = 0;
    const flush = async (): Promise<void> => {
      await this.replica.writeMany(offsets, data);
      offsets.forEach((o, i) => this.hashes.update(o, data[i]!));
      offsets = [];
      data = [];
      pending = 0;
    };
    for await (const e of extentsOf(diff)) {
      const raw = await rawDataAsync(e, e.data, this.volumeId, seq);
      offsets.push(e.offset);
      data.push(raw);
      pending += raw.length;
      if (pending >= WRITE_BATCH_BYTES) await flush();
    }
    await flush();
  }

  /**
   * Make a group durable and acknowledge it: false when the replica was replaced meanwhile (nothing done).
   *
   * Overlap: drain() loads and writes the next group (before-images included) while this runs. It is safe:
   * - nothing of the next group is acked or named by doneSeq here: `group` is what was written before this
   *   call, and the replica fsync makes all of it durable (fdatasync covers every write completed before
   *   it; writes of the next group racing with it may or may not reach the disk, and are not claimed);
   * - the hash table is saved as captured now, before the next group changes it (ReplicaHashes.snapshot):
   *   the table saved with a sequence claims exactly the blocks written up to it, nothing a redo from
   *   doneSeq + 1 would not rewrite;
   * - the next group's before-images are read from the replica as this group left it (the page cache
   *   holds its writes, durable or not), every segment of a batch durable before its first write, as
   *   without overlap. After a crash the redo applies this group again, then the next, in order: every
   *   block the next group's segments cover is rewritten before a later differential reads it, and a
   *   segment already on disk is kept, not re-read from a replica that may hold newer bytes;
   * - commits run one at a time, in order; one that fails (or finds the replica replaced) stops the pass
   *   before the next group is committed; point snapshots (pointTakesReplica), exclusive holds, close and
   *   a damaged differential each wait for the running commit before anything more is written or done.
   */
  private async commit(group: Committing): Promise<boolean> {
    const last = group.at(-1)!;
    // Taken before anything of the next group reaches the table.
    const table = group.some((g) => g.diff.extents.length > 0) ? this.hashes.snapshot() : undefined;
    try {
      await this.replica.sync();
      // Replaced while these differentials were written: they went to the old file; not done, not acked.
      if (await this.stale()) {
        if (table) this.hashes.dropSnapshot();
        return false;
      }
    } catch (e) {
      if (table) this.hashes.dropSnapshot();
      throw e;
    }
    // Hashes before doneSeq: a crash between the two re-applies the group, rewriting both.
    if (table !== undefined) await this.hashes.persist(last.seq, table);
    const newest = (kind: 'APP' | 'CRASH'): RecoveryPoint | undefined => group.map((g) => g.point).filter((p): p is RecoveryPoint => p?.consistency === kind).at(-1);
    const app = newest('APP');
    const crash = newest('CRASH');
    // hashesSeq: the table's recorded sequence, checked at attach (a table from a stale applier is rebuilt).
    await this.store.done(last.seq, { resyncing: last.resyncing, hashesSeq: this.hashes.seq, ...(app && { lastAppPoint: app }), ...(crash && { lastCrashPoint: crash }) });
    for (const g of group) if (g.point) await this.hooks.point?.(g.point);
    const diff = last.diff;
    this.stats.consistent = !last.resyncing;
    this.stats.appliedSeq = last.seq;
    this.stats.appliedBytes += group.reduce((n, g) => n + g.diff.dataBytes, 0);
    this.stats.lastAppliedAt = Date.now();
    this.stats.lagMs = Date.now() - diff.header.endTimeMs;
    this.stats.lastConsistency = diff.header.consistency;
    for (const g of group) this.log.info({ volume: this.volumeId, seq: g.seq, bytes: g.diff.dataBytes, consistency: g.diff.header.consistency, tags: g.diff.header.tags, ...(group.length > 1 && { group: group.length }) }, 'differential applied');
    this.hooks.applied(last.seq);
    this.waiters = this.waiters.filter((w) => (w.seq <= last.seq ? (w.resolve(), false) : true));
    for (const g of group) releaseData(g);
    return true;
  }

  /** True (and this applier stopped) when the replica was replaced under its path. */
  private async stale(): Promise<boolean> {
    const how = await this.replica.replaced();
    if (how === null) return false;
    this.closed = true;
    this.stats.lastError = `TM_ERR_REPLICA_REPLACED: ${how}`;
    this.hooks.replaced?.(how);
    return true;
  }

  /** Whoever waits for an apply here waits for `next` instead (this applier was replaced by it). */
  handOver(next: Applier): void {
    for (const w of this.waiters) void next.applied(w.seq).then(w.resolve);
    this.waiters = [];
  }

  /**
   * Retention, pause mode: may before-images of about `bytes` more be kept? False when the log is full
   * (nothing more is applied; the pipeline backs up until there is room).
   */
  private admit(bytes: number): boolean {
    if (this.retention!.admit(bytes)) return true;
    this.stats.lastError = `TM_ERR_RETENTION_FULL: ${this.retention!.stats.paused}`;
    return false;
  }

  /**
   * A point's capture time, made non-decreasing per volume: a source clock stepped back must not give a
   * later point an earlier time (recover --at would take it for one from before). Warned when it happens.
   */
  private captureTime(seq: number, endTimeMs: number, before?: RecoveryPoint | null): number {
    const s = this.store.state;
    // `before`: the newest point of the group being applied (not in the store's state yet).
    const last = Math.max(s?.lastCrashPoint?.atMs ?? 0, s?.lastAppPoint?.atMs ?? 0, before?.atMs ?? 0);
    if (endTimeMs >= last) return endTimeMs;
    this.log.warn({ volume: this.volumeId, seq, captureTimeMs: endTimeMs, previousPointMs: last }, 'capture time earlier than the previous point (source clock stepped back?); recorded as the previous point\'s time');
    return last;
  }

  /** Resolves once every differential up to `seq` is applied. */
  applied(seq: number): Promise<void> {
    if (this.store.doneSeq >= seq) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  /** Run `fn` with the replica and its hashes still: no differential is applied meanwhile. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.exclusiveWanted++;
    try {
      while (this.running || this.paused) await (this.running ?? this.paused);
    } finally {
      this.exclusiveWanted--;
    }
    const p = fn();
    this.paused = p.catch(() => {});
    try {
      return await p;
    } finally {
      this.paused = null;
      void this.kick().catch(() => {});
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.running;
  }
}

/**
 * The buffers of a committed differential held in memory back to the extent pool: its received bodies
 * (Extent.release) and its decompressed extents. Only here, once the group is durable: until then the
 * replica writes, the retention batch (before-images of later differentials) and the table read them.
 */
function releaseData(g: Held): void {
  if ('file' in g.diff) return;
  g.diff.extents.forEach((e, i) => {
    const raw = g.raws?.[i];
    if (raw && raw.buffer !== e.data.buffer) extentPool.give(raw);
    const release = e.release;
    e.release = undefined;
    release?.();
  });
}
