// Applies one volume's staged differentials to its replica, strictly in sequence order.
//
// Crash safety is redo-based: a differential is staged durably (.hrl, fsync'd) before any replica
// block is touched, and is marked applied (state.json doneSeq, fsync'd) only after the replica is
// fsync'd. A crash in between leaves the staged file in place, and open() applies it again from the
// start; rewriting the same bytes at the same offsets is idempotent, so the replica ends exactly at
// that differential's boundary before anything else happens. Every extent is decompressed and checked
// against its source checksum before the first write, so a damaged differential changes nothing.
import { tmError, isCorruption, isTidemarkError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { DiffStore } from '../proto/diff-store.js';
import { currentPoint, type RecoveryPoint } from './volume-state.js';
import { rawDataAsync } from '../proto/extent-codec.js';
import { extentsOf, FLAG_RESYNC, FLAG_RESYNC_END, type StoredDiff } from '../proto/hrl.js';
import { checkExtent } from '../proto/limits.js';
import type { ReplicaHashes } from './replica-hashes.js';
import type { RetentionLog } from './retention/retention-log.js';
import type { Replica } from './replica.js';

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

  constructor(
    readonly volumeId: string,
    private readonly store: DiffStore,
    private readonly replica: Replica,
    readonly hashes: ReplicaHashes,
    private readonly hooks: {
      applied(seq: number): void;
      damaged(seq: number): void;
      /** The replica's path names another file or device than the one open: this applier has stopped for good. */
      replaced?(how: string): void;
      point?(p: RecoveryPoint): Promise<void>;
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
    while (!this.closed && this.exclusiveWanted === 0) {
      const seq = this.store.doneSeq + 1;
      if (!this.store.pending().includes(seq)) return;
      let diff: StoredDiff;
      // Raw data of every extent when the differential is held in memory; a large one is verified here
      // extent by extent and read again from its file while it is applied (proto/hrl.ts IN_MEMORY_BYTES).
      let raws: Buffer[] | null = null;
      try {
        diff = await this.store.load(seq);
        if (diff.header.volumeId !== this.volumeId || diff.header.seq !== seq) {
          throw tmError('TM_ERR_HRL_CORRUPT', `staged file ${seq} names volume ${diff.header.volumeId} seq ${diff.header.seq}`, { volume: this.volumeId, seq });
        }
        // Checked by the receiver too; a file staged before that check must not grow or wedge the replica.
        const geometry = { volumeSize: this.store.state?.sizeBytes ?? 0, blockSize: this.store.state?.blockSize ?? 0 };
        for (const e of diff.extents) checkExtent(e, geometry, this.volumeId, seq);
        if ('file' in diff) for await (const e of extentsOf(diff)) await rawDataAsync(e, e.data, this.volumeId, seq);
        else raws = await Promise.all(diff.extents.map((e) => rawDataAsync(e, e.data, this.volumeId, seq)));
      } catch (e) {
        if (!isCorruption(e) && !(isTidemarkError(e) && e.code === 'TM_ERR_EXTENT_BOUNDS')) throw e;
        // Never applied: discard it and what follows, so the process server (which keeps its copy until
        // we acknowledge the apply) sends it again.
        this.stats.lastError = `${e.code}: ${e.message}`;
        this.log.error({ volume: this.volumeId, seq, code: e.code, err: e.message }, 'damaged staged differential discarded; asking for retransmission');
        await this.store.discardFrom(seq);
        this.hooks.damaged(seq);
        return;
      }
      const flags = diff.header.flags;
      const resyncing = flags & FLAG_RESYNC_END ? false : flags & FLAG_RESYNC ? true : this.store.state?.resyncing ?? false;
      // A recovery point only where the whole replica is at the source's captured instant.
      const c = diff.header.consistency;
      const point: RecoveryPoint | null = !resyncing && c !== 'FUZZY' ? { seq, atMs: this.captureTime(seq, diff.header.endTimeMs), consistency: c, tags: diff.header.tags, appliedAt: Date.now() } : null;
      // A seed still being hashed (ReplicaHashes.seed): the blocks written here first, or the entries
      // recorded below would be overwritten by hashes of the data from before.
      const bs = this.hashes.blockSize;
      await this.hashes.ready(diff.extents.reduce((end, e) => Math.max(end, Math.ceil((e.offset + e.length) / bs)), 0));
      // Not a byte more through a descriptor whose file the path no longer names (docs/OPERATIONS.md).
      if (await this.stale()) return;
      if (this.retention && !(await this.keepBeforeImages(seq, diff, point))) return;
      let i = 0;
      for await (const e of extentsOf(diff)) {
        const raw = raws ? raws[i]! : await rawDataAsync(e, e.data, this.volumeId, seq);
        await this.replica.write(e.offset, raw);
        this.hashes.update(e.offset, raw);
        i++;
      }
      await this.replica.sync();
      // Replaced while this differential was written: it went to the old file; it is not done, not acked.
      if (await this.stale()) return;
      // Hashes before doneSeq: a crash between the two re-applies this differential, rewriting both.
      if (diff.extents.length > 0) await this.hashes.persist(seq);
      // hashesSeq: the table's recorded sequence, checked at attach (a table from a stale applier is rebuilt).
      await this.store.done(seq, { resyncing, hashesSeq: this.hashes.seq, ...(point && (c === 'APP' ? { lastAppPoint: point } : { lastCrashPoint: point })) });
      if (point) await this.hooks.point?.(point);
      this.stats.consistent = !resyncing;
      this.stats.appliedSeq = seq;
      this.stats.appliedBytes += diff.dataBytes;
      this.stats.lastAppliedAt = Date.now();
      this.stats.lagMs = Date.now() - diff.header.endTimeMs;
      this.stats.lastConsistency = diff.header.consistency;
      this.log.info({ volume: this.volumeId, seq, bytes: diff.dataBytes, consistency: diff.header.consistency, tags: diff.header.tags }, 'differential applied');
      this.hooks.applied(seq);
      this.waiters = this.waiters.filter((w) => (w.seq <= seq ? (w.resolve(), false) : true));
    }
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
   * Retention: the before-images of what `diff` overwrites, durable before it is applied. False when the
   * retention log is full in pause mode (nothing is applied; the pipeline backs up until there is room).
   * Before the first recovery point (the initial sync) there is no point to go back to, so nothing is kept.
   */
  private async keepBeforeImages(seq: number, diff: StoredDiff, tip: RecoveryPoint | null): Promise<boolean> {
    const retention = this.retention!;
    const base = currentPoint(this.store.state);
    if (!base && retention.segments.length === 0) return true;
    const estimate = diff.extents.reduce((n, e) => n + e.length + 20, 64);
    if (!retention.admit(estimate)) {
      this.stats.lastError = `TM_ERR_RETENTION_FULL: ${retention.stats.paused}`;
      return false;
    }
    await retention.beforeApply(seq, diff.extents, this.replica, base, tip, this.hashes.hashes);
    return true;
  }

  /**
   * A point's capture time, made non-decreasing per volume: a source clock stepped back must not give a
   * later point an earlier time (recover --at would take it for one from before). Warned when it happens.
   */
  private captureTime(seq: number, endTimeMs: number): number {
    const s = this.store.state;
    const last = Math.max(s?.lastCrashPoint?.atMs ?? 0, s?.lastAppPoint?.atMs ?? 0);
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
