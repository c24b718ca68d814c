// A volume's retention log: the segments of before-images that take the replica back to its earlier
// recovery points, the index of those points (read from the segment headers), and the policy work on
// them (window, thinning by compaction, space cap).
//
// Crash safety rests on three rules. A segment is written and renamed into place, durably, before the
// differential it covers touches the replica. Compaction renames the merged segment into place before
// deleting the segments it replaces, and open() deletes any segment another one contains. Purging removes
// the oldest segments first, so what is left is always a chain that reaches the replica's current state.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { ensureDir, fsyncDir, removeTempFiles } from '../../common/durable.js';
import { tmError, wrap } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { RecoveryPoint } from '../volume-state.js';
import type { Replica } from '../replica.js';
import { blockHash } from '../../common/checksum.js';
import { leafHashes } from '../../proto/range-hash.js';
import { Damage } from './damage.js';
import { oldestImages } from './merge.js';
import { pointsToKeep, type RetentionPolicy } from './policy.js';
import { BeforeImageBatch } from './before-images.js';
import { parseSegmentName, readSegment, readSegmentHeader, SegmentWriter, type SegmentHeader } from './segment.js';

export interface RetentionOptions {
  policy: RetentionPolicy;
  /** Space cap for the volume's segments, or null for none. */
  maxBytes: number | null;
  /** At the cap: delete the oldest history, or stop applying (the pipeline backs up) until there is room. */
  onFull: 'purge' | 'pause';
}

/** Raise an alert once the log fills this much of its cap, whatever onFull says. */
export const ALERT_FRACTION = 0.8;

export interface SegmentInfo extends SegmentHeader {
  file: string;
  bytes: number;
}

export interface RetentionStats {
  segments: number;
  bytes: number;
  maxBytes: number | null;
  points: number;
  oldestPoint: RecoveryPoint | null;
  compactions: number;
  thinnedPoints: number;
  purgedSegments: number;
  alert: string | null;
  paused: string | null;
  lastMaintenanceAt: number;
  lastError: string | null;
  /** Points never listed again because they would recover damaged replica bytes (inclusive seq ranges). */
  damagedPoints: Array<[number, number]>;
}

/**
 * xxh64 of every block of `bufs` (each whole blocks but for the volume's short last block), in order: one
 * native call when they lie back to back in one allocation (Replica.readMany's slices), as they usually do.
 */
function blockHashesOf(bufs: Buffer[], bs: number): BigUint64Array {
  const first = bufs[0];
  let end = first?.byteOffset ?? 0;
  const together = bufs.every((b, i) => {
    const ok = b.buffer === first!.buffer && b.byteOffset === end && (b.length % bs === 0 || i === bufs.length - 1);
    end += b.length;
    return ok;
  });
  if (first && together) return leafHashes(Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset), bs);
  const out: bigint[] = [];
  for (const b of bufs) for (let off = 0; off < b.length; off += bs) out.push(blockHash(b.subarray(off, Math.min(off + bs, b.length))));
  return BigUint64Array.from(out);
}

export class RetentionLog {
  segments: SegmentInfo[] = [];
  readonly stats: RetentionStats;
  private locked: Promise<unknown> = Promise.resolve();
  /** Segments ending after what this returns are still needed elsewhere (the bucket tier): never removed. */
  private keepAfter: () => number = () => Number.MAX_SAFE_INTEGER;

  constructor(
    readonly dir: string,
    readonly volumeId: string,
    readonly geometry: { sizeBytes: number; blockSize: number },
    readonly opts: RetentionOptions,
    readonly log: Logger,
  ) {
    this.stats = { segments: 0, bytes: 0, maxBytes: opts.maxBytes, points: 0, oldestPoint: null, compactions: 0, thinnedPoints: 0, purgedSegments: 0, alert: null, paused: null, lastMaintenanceAt: 0, lastError: null, damagedPoints: [] };
    this.damage = new Damage(dir);
  }

  private readonly damage: Damage;

  get bytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  async open(): Promise<void> {
    await ensureDir(this.dir);
    await removeTempFiles(this.dir);
    await this.damage.open();
    this.stats.damagedPoints = this.damage.record.ranges;
    const found: SegmentInfo[] = [];
    for (const name of await fsp.readdir(this.dir)) {
      if (!parseSegmentName(name)) continue;
      const file = path.join(this.dir, name);
      const header = await readSegmentHeader(file).catch((e) => { throw wrap(e, `open retention log of ${this.volumeId}`, { volume: this.volumeId }); });
      found.push({ ...header, file, bytes: (await fsp.stat(file)).size });
    }
    // A segment inside a larger one was merged into it by a compaction a crash interrupted.
    const contained = (s: SegmentInfo): boolean => found.some((o) => o !== s && o.fromSeq <= s.fromSeq && o.toSeq >= s.toSeq && o.toSeq - o.fromSeq > s.toSeq - s.fromSeq);
    for (const s of found.filter(contained)) await fsp.rm(s.file, { force: true });
    const chain = found.filter((s) => !contained(s)).sort((a, b) => a.fromSeq - b.fromSeq);
    // Only a chain unbroken up to the newest segment can take the replica back; older islands are useless.
    let start = chain.length - 1;
    while (start > 0 && chain[start - 1]!.toSeq + 1 === chain[start]!.fromSeq) start--;
    if (start > 0) {
      this.log.error({ volume: this.volumeId, dropped: start, gapAfter: chain[start - 1]!.toSeq }, 'retention log has a gap; segments before it cannot be reached and are removed');
      for (const s of chain.slice(0, start)) await fsp.rm(s.file, { force: true });
    }
    this.segments = chain.slice(Math.max(0, start));
    await fsyncDir(this.dir);
    this.refreshStats(Number.MAX_SAFE_INTEGER);
  }

  /** Keep every segment ending after `fn()` (the bucket tier: not yet confirmed in the bucket). */
  holdAfter(fn: () => number): void {
    this.keepAfter = fn;
  }

  /** Serialise maintenance and recovery: neither may see segments the other is replacing. */
  lock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.locked.then(fn, fn);
    this.locked = run.catch(() => {});
    return run;
  }

  /** Pause mode: may a differential of about `bytes` be applied without passing the cap? */
  admit(bytes: number): boolean {
    const { maxBytes, onFull } = this.opts;
    const full = onFull === 'pause' && maxBytes !== null && this.bytes + bytes > maxBytes;
    const reason = full ? `retention log full: ${this.bytes} + ${bytes} bytes would pass the cap of ${maxBytes}; apply paused` : null;
    if (reason && !this.stats.paused) this.log.error({ volume: this.volumeId, code: 'TM_ERR_RETENTION_FULL', bytes: this.bytes, maxBytes }, 'retention log full: apply paused until there is room (raise the cap, shorten the window or use onFull "purge")');
    if (!reason && this.stats.paused) this.log.info({ volume: this.volumeId }, 'retention log has room again: apply resumes');
    this.stats.paused = reason;
    return !full;
  }

  /**
   * Record durably, before differential `seq` touches the replica, what the replica holds where it will
   * write. After a crash the differential is applied again: its segment is kept (the replica may already
   * hold part of the new data), and only blocks it does not yet cover are read now (they were untouched).
   */
  async beforeApply(seq: number, extents: ReadonlyArray<{ offset: number; length: number }>, replica: Replica, base: RecoveryPoint | null, tip: RecoveryPoint | null, expected: BigUint64Array | null = null): Promise<void> {
    const b = this.batch(replica, expected);
    try {
      await b.add(seq, extents, null, base, tip);
    } catch (e) {
      await b.abandon();
      throw e;
    }
    await b.durable();
  }

  /**
   * The before-images of consecutive differentials, made durable together before any of them writes the
   * replica (before-images.ts). `expected`: the replica hash table, to check what is read (damage).
   */
  batch(replica: Replica, expected: BigUint64Array | null = null): BeforeImageBatch {
    return new BeforeImageBatch(this, replica, expected);
  }

  /** Before differential `seq`'s segment: a chain that stops short of it cannot reach the replica. */
  async startChain(seq: number): Promise<void> {
    const last = this.segments.at(-1);
    if (!last || last.toSeq >= seq - 1) return;
    // Differentials were applied without before-images (retention was off): the old chain cannot reach here.
    this.log.warn({ volume: this.volumeId, lastSegment: last.toSeq, seq }, 'retention log does not reach the replica; starting a new chain');
    for (const s of this.segments) await fsp.rm(s.file, { force: true });
    this.segments = [];
    this.stats.segments = 0;
    this.stats.bytes = 0;
  }

  /** Segments of a batch in place (durable): listed, each replacing the one of the same name (a redo's). */
  placed(segments: Array<{ header: SegmentHeader; file: string; bytes: number; replaces: string | null }>): void {
    for (const p of segments) {
      const existing = p.replaces === null ? undefined : this.segments.find((s) => s.file === p.replaces);
      this.segments = this.segments.filter((s) => s !== existing);
      this.segments.push({ ...p.header, file: p.file, bytes: p.bytes });
      // On the apply path: adjust the totals rather than summing every segment again.
      this.stats.bytes += p.bytes - (existing?.bytes ?? 0);
    }
    // A group re-applied after a crash (Applier: group commit) rewrites a segment older than the newest.
    if (segments.some((p) => p.replaces !== null)) this.segments.sort((a, b) => a.fromSeq - b.fromSeq);
    this.stats.segments = this.segments.length;
  }

  /**
   * A before-image is what the replica held, which is what Tidemark wrote there unless it was damaged behind
   * our back: compared with the hash table (what we wrote), a block that differs, or one a verify found
   * damaged and nothing has rewritten since, makes every point that would read it wrong. Recorded (durably,
   * before the differential overwrites the evidence) so those points are never listed.
   */
  async checkBeforeImages(seq: number, extents: ReadonlyArray<{ offset: number; length: number }>, read: Buffer[], expected: BigUint64Array): Promise<void> {
    const bs = this.geometry.blockSize;
    const bad: number[] = [];
    const written: number[] = [];
    const hashes = blockHashesOf(read, bs);
    let h = 0;
    extents.forEach((e, i) => {
      const data = read[i]!;
      for (let off = 0; off < data.length; off += bs, h++) {
        const b = (e.offset + off) / bs;
        const pending = this.damage.isPending(b);
        if (pending) written.push(b);
        if (pending || hashes[h] !== expected[b]) bad.push(b);
      }
    });
    if (bad.length === 0) return;
    await this.markDamaged(bad, seq - 1, { written }, 'replica blocks about to be overwritten differ from what was written there');
  }

  /**
   * Replica blocks found damaged (by a verify's re-read: `pending`, still in the replica; or just before a
   * differential overwrites them): the points from the last differential that wrote any of them up to
   * `throughSeq` would recover damaged bytes. That differential is the newest segment holding a before-image
   * of the block (a compacted one: its first sequence); with none, every retained point.
   */
  async markDamaged(blocks: number[], throughSeq: number, change: { pending?: number[]; written?: number[] }, why: string): Promise<void> {
    // Not under the retention lock (a recovery holding it may wait for the applier that calls this): a
    // segment compacted away meanwhile fails the search, and then every point counts as damaged.
    const from = await this.lastWriters(blocks, throughSeq).catch(() => 0);
    await this.damage.add(from, throughSeq, change);
    this.stats.damagedPoints = this.damage.record.ranges;
    this.log.error({ volume: this.volumeId, code: 'TM_ERR_REPLICA_DAMAGED', blocks: blocks.length, firstBlock: blocks[0], points: [from, throughSeq], err: why }, 'replica damage: recovery points that would recover the damaged bytes are no longer listed');
    this.refreshStats(throughSeq);
  }

  /** The first sequence of the newest segment (up to `throughSeq`) holding a before-image of each block; the lowest of them. */
  private async lastWriters(blocks: number[], throughSeq: number): Promise<number> {
    const bs = this.geometry.blockSize;
    const left = new Set(blocks);
    let from = Number.MAX_SAFE_INTEGER;
    for (const s of [...this.segments].filter((x) => x.toSeq <= throughSeq).reverse()) {
      for await (const img of readSegment(s.file)) {
        for (let b = img.offset / bs; b < (img.offset + img.data.length) / bs; b++) {
          if (left.delete(b)) from = Math.min(from, s.fromSeq);
        }
      }
      if (left.size === 0) return from;
    }
    return 0;
  }

  /** The points the log can take the replica (at `doneSeq`) back to, oldest first; the replica's own state included. */
  points(doneSeq: number, current: RecoveryPoint | null = null): RecoveryPoint[] {
    const bySeq = new Map<number, RecoveryPoint>();
    if (current && current.seq === doneSeq) bySeq.set(current.seq, current);
    // A chain that stops short of the replica cannot take it back anywhere.
    if ((this.segments.at(-1)?.toSeq ?? doneSeq) < doneSeq) return [...bySeq.values()].filter((p) => !this.damage.covers(p.seq));
    const first = this.segments[0];
    if (first?.base) bySeq.set(first.base.seq, first.base);
    for (const s of this.segments) if (s.tip && s.tip.seq <= doneSeq) bySeq.set(s.tip.seq, s.tip);
    return [...bySeq.values()].filter((p) => p.seq <= doneSeq && !this.damage.covers(p.seq)).sort((a, b) => a.seq - b.seq);
  }

  /** The segments that take the replica back to point `seq`: every one after it, unbroken. */
  chainAfter(seq: number): SegmentInfo[] {
    const chain = this.segments.filter((s) => s.toSeq > seq);
    if (chain.length > 0 && chain[0]!.fromSeq !== seq + 1) {
      throw tmError('TM_ERR_POINT_NOT_FOUND', `point ${seq} of ${this.volumeId} is no longer retained (thinned or purged); its history was merged into ${chain[0]!.fromSeq}..${chain[0]!.toSeq}`, { volume: this.volumeId, seq });
    }
    return chain;
  }

  /** Apply the policy: drop points out of the window, thin the rest by compaction, enforce the cap. */
  maintain(nowMs: number, doneSeq: number, current: RecoveryPoint | null): Promise<void> {
    return this.lock(async () => {
      try {
        const points = this.points(doneSeq, current);
        const keep = pointsToKeep(points, nowMs, this.opts.policy);
        const kept = points.filter((p) => keep.has(p.seq));
        const oldest = kept[0];
        if (oldest) await this.dropThrough(oldest.seq, 'window');
        // Compact a range once its newer end is itself past the first thinning age: before that, the points
        // after it are still being thinned one by one and the merged segment would be rewritten each pass.
        const settled = nowMs - Math.min(...this.opts.policy.tiers.map((t) => t.afterMs), Number.MAX_SAFE_INTEGER);
        for (let i = 0; i + 1 < kept.length; i++) if ((kept[i + 1]!.appliedAt || kept[i + 1]!.atMs) < settled) await this.compact(kept[i]!, kept[i + 1]!);
        this.stats.thinnedPoints += points.length - kept.length;
        await this.enforceCap(doneSeq);
        this.stats.lastError = null;
      } catch (e) {
        const err = wrap(e, `retention maintenance of ${this.volumeId}`, { volume: this.volumeId });
        this.stats.lastError = `${err.code}: ${err.message}`;
        this.log.error({ volume: this.volumeId, code: err.code, err: err.message }, 'retention maintenance failed; will retry');
      } finally {
        this.stats.lastMaintenanceAt = nowMs;
        this.refreshStats(doneSeq, current);
      }
    });
  }

  /**
   * Forget every before-image: they were read from a replica that is gone (replaced under its path), so
   * rolling the present one back with them would recover bytes no point ever held.
   */
  discardAll(why: string): Promise<void> {
    return this.lock(async () => {
      const n = this.segments.length;
      await this.dropThrough(Number.MAX_SAFE_INTEGER, why);
      if (n > 0) this.log.error({ volume: this.volumeId, segments: n, why }, 'retention history discarded: its points cannot be recovered from this replica');
      this.refreshStats(Number.MAX_SAFE_INTEGER);
    });
  }

  /** Delete the oldest segments, up to and including the one ending at `seq`. */
  private async dropThrough(seq: number, why: string): Promise<void> {
    const gone = this.segments.filter((s) => s.toSeq <= seq && s.toSeq <= this.keepAfter());
    if (gone.length === 0) return;
    for (const s of gone) await fsp.rm(s.file, { force: true });
    await fsyncDir(this.dir);
    this.segments = this.segments.filter((s) => !gone.includes(s));
    this.stats.purgedSegments += gone.length;
    this.log.info({ volume: this.volumeId, segments: gone.length, throughSeq: seq, why }, 'retention: oldest history removed');
  }

  /** Merge the segments between two kept points into one that keeps each block's oldest image. */
  private async compact(from: RecoveryPoint, to: RecoveryPoint): Promise<void> {
    const parts = this.segments.filter((s) => s.fromSeq > from.seq && s.toSeq <= to.seq);
    if (parts.length < 2 || to.seq > this.keepAfter()) return;
    const started = Date.now();
    const header: SegmentHeader = { volumeId: this.volumeId, fromSeq: from.seq + 1, toSeq: to.seq, ...this.geometry, base: from, tip: to, createdAt: Date.now() };
    const w = await SegmentWriter.create(this.dir, header);
    let merged: { file: string; bytes: number };
    try {
      for await (const img of oldestImages(parts.map((s) => s.file), this.geometry.blockSize, this.geometry.sizeBytes)) await w.add(img);
      merged = await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
    // The merged segment is durable under its name: the parts are now redundant (open() removes them too).
    for (const s of parts) await fsp.rm(s.file, { force: true });
    await fsyncDir(this.dir);
    const before = parts.reduce((n, s) => n + s.bytes, 0);
    this.segments = [...this.segments.filter((s) => !parts.includes(s)), { ...header, ...merged }].sort((a, b) => a.fromSeq - b.fromSeq);
    this.stats.compactions++;
    this.log.info({ volume: this.volumeId, fromSeq: header.fromSeq, toSeq: header.toSeq, parts: parts.length, bytesBefore: before, bytesAfter: merged.bytes, ms: Date.now() - started }, 'retention: compacted');
  }

  /** Purge mode: oldest first, never a segment of a differential not yet applied (its apply may be under way). */
  private async enforceCap(doneSeq: number): Promise<void> {
    const { maxBytes, onFull } = this.opts;
    if (maxBytes === null || onFull !== 'purge') return;
    while (this.segments.length > 0 && this.segments[0]!.toSeq <= doneSeq && this.bytes > maxBytes) {
      if (this.segments[0]!.toSeq > this.keepAfter()) {
        this.log.error({ volume: this.volumeId, seq: this.segments[0]!.toSeq, bytes: this.bytes, maxBytes }, 'retention cap reached, but the oldest segments are not yet confirmed in the bucket: kept until they are');
        return;
      }
      const s = this.segments[0]!;
      if (s.base && s.base.tags.some((t) => this.opts.policy.pinTags.includes(t))) {
        this.log.error({ volume: this.volumeId, seq: s.base.seq, tags: s.base.tags }, 'retention cap reached: purging a pinned point (raise maxBytes to keep pinned points)');
      }
      await this.dropThrough(s.toSeq, 'space cap');
    }
  }

  private refreshStats(doneSeq: number, current: RecoveryPoint | null = null): void {
    const points = this.points(doneSeq, current);
    const bytes = this.bytes;
    const { maxBytes } = this.opts;
    const alert = maxBytes !== null && bytes >= ALERT_FRACTION * maxBytes ? `retention log ${Math.round((100 * bytes) / maxBytes)}% of its ${maxBytes}-byte cap` : null;
    if (alert && !this.stats.alert) this.log.warn({ volume: this.volumeId, bytes, maxBytes }, `retention alert: ${alert}`);
    Object.assign(this.stats, { segments: this.segments.length, bytes, points: points.length, oldestPoint: points[0] ?? null, alert });
  }
}
