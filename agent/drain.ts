// Planned failover, source side (`tidemark failover --planned`, `tidemark drain`): once the operator has
// stopped the application, take a final recovery point of the volume and then no more differentials, so
// the replica ends exactly at that point and nothing written on the source is left behind. The volume stays
// drained across restarts (drained.json in its state folder) until `resume`, which starts a checksum
// resync: while drained, its disk may have been written by reverse replication (docs/OPERATIONS.md,
// failover and failback). The journal keeps uploading what it holds; only new cycles stop.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { unlinkDurable, writeFileDurable } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { CycleResult, VolumeReplicator } from './replicator.js';

export const DRAINED_FILE = 'drained.json';

export interface DrainedPoint {
  volume: string;
  /** The final differential: a recovery point holding every write made before the drain. */
  seq: number;
  atMs: number;
  consistency: 'CRASH' | 'APP';
  tags: string[];
  drainedAt: number;
  /** The record on disk was damaged: the volume stays drained, but its final point is not known. */
  damaged?: string;
}

/** Complete passes (no more dirty data) that end without a point before giving up: a freeze that keeps failing, bitmap mode. */
const MAX_PASSES = 3;

interface Request {
  promise: Promise<DrainedPoint>;
  resolve(p: DrainedPoint): void;
  reject(e: unknown): void;
}

export class Drains {
  private readonly drained = new Map<string, DrainedPoint>();
  private readonly requests = new Map<string, Request>();

  /** `volumesDir`: the agent's <stateDir>/volumes, one folder per volume. */
  constructor(private readonly volumesDir: string, private readonly log: Logger) {}

  private file(id: string): string {
    return path.join(this.volumesDir, id, DRAINED_FILE);
  }

  async open(ids: readonly string[]): Promise<void> {
    for (const id of ids) {
      const raw = await fsp.readFile(this.file(id), 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(e)));
      if (raw === null) continue;
      const p = parseDrained(id, raw, this.file(id));
      this.drained.set(id, p);
      // Damaged, it still says "drained": replicating onto a replica that may be serving a failover would be
      // worse than waiting for the operator's resume, which resyncs.
      if (p.damaged) this.log.error({ volume: id, code: 'TM_ERR_STATE_CORRUPT', err: p.damaged }, 'drain record damaged: the volume stays drained until `tidemark resume`');
      else this.log.warn({ volume: id, seq: p.seq }, 'volume drained for failover: not protected until `tidemark resume`');
    }
  }

  get(id: string): DrainedPoint | null {
    return this.drained.get(id) ?? null;
  }

  /**
   * Ask for the final point of `r`; the next cycle takes it (cycles are serial, so it never runs beside
   * one). Asking again for a drained volume answers with the same point, so a retried failover is safe.
   */
  request(r: VolumeReplicator): Promise<DrainedPoint> {
    const done = this.drained.get(r.volumeId);
    if (done?.damaged) return Promise.reject(tmError('TM_ERR_STATE_CORRUPT', done.damaged, { volume: r.volumeId, path: this.file(r.volumeId) }));
    if (done) return Promise.resolve(done);
    if (r.capture.kind === 'none') {
      return Promise.reject(tmError('TM_ERR_CAPTURE', `${r.volumeId} has capture "none": its differentials are never recovery points, so no final point can be taken; a planned failover needs capture "reflink" or "freeze"`, { volume: r.volumeId }));
    }
    let req = this.requests.get(r.volumeId);
    if (!req) {
      let resolve!: (p: DrainedPoint) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<DrainedPoint>((res, rej) => { resolve = res; reject = rej; });
      req = { promise, resolve, reject };
      this.requests.set(r.volumeId, req);
    }
    return req.promise;
  }

  /** A volume's cycle as the agent runs it: nothing once drained, the final point when one is asked for. */
  async cycle(r: VolumeReplicator, notify: () => void): Promise<CycleResult[]> {
    if (this.drained.has(r.volumeId)) return [];
    const req = this.requests.get(r.volumeId);
    if (!req) return [await r.cycle()];
    this.requests.delete(r.volumeId);
    try {
      req.resolve(await this.finalPoint(r, notify));
    } catch (e) {
      req.reject(e);
    }
    return [];
  }

  /**
   * Cycle until a pass finds nothing more to send and the last differential journaled is a recovery
   * point: a resync under way is finished first, a point larger than one differential is read to its end.
   */
  private async finalPoint(r: VolumeReplicator, notify: () => void): Promise<DrainedPoint> {
    const id = r.volumeId;
    this.log.info({ volume: id }, 'drain: taking the final point');
    let passes = 0;
    for (;;) {
      const res = await r.cycle();
      if (res.seq !== null) notify();
      if (res.more) continue;
      const { crash, app } = r.points;
      const last = (crash?.seq ?? 0) >= (app?.seq ?? 0) ? crash : app;
      const settled = !r.resync.owning && !r.resync.state.endPending;
      if (last && settled && last.seq === r.journal.lastSeq) {
        const p: DrainedPoint = { volume: id, seq: last.seq, atMs: last.atMs, consistency: last === app ? 'APP' : 'CRASH', tags: last.tags, drainedAt: Date.now() };
        await writeFileDurable(this.file(id), JSON.stringify(p));
        this.drained.set(id, p);
        this.log.info({ volume: id, seq: p.seq, atMs: p.atMs, consistency: p.consistency }, 'volume drained: final point journaled; no more cycles until resume');
        return p;
      }
      if (++passes >= MAX_PASSES) {
        const lastError = (r.capture.stats as { lastError?: unknown } | undefined)?.lastError;
        throw tmError('TM_ERR_CAPTURE', `no final recovery point of ${id} after ${passes} passes (mode ${r.mode}${r.modeReason ? `: ${r.modeReason}` : ''}${lastError ? `; capture: ${String(lastError)}` : ''}); it is still protected: fix the cause and drain again`, { volume: id });
      }
    }
  }

  /**
   * Protect a drained volume again, starting with a checksum resync against the replica: its disk may
   * have been written while drained (by reverse replication). False when it was not drained.
   */
  async resume(r: VolumeReplicator): Promise<boolean> {
    if (!this.drained.has(r.volumeId)) return false;
    // Resync first: a crash before the file is removed leaves it drained, and a resume again restarts the pass.
    await r.resync.start('resync', 'resumed after failover: the volume may have been written while drained');
    await unlinkDurable(this.file(r.volumeId));
    this.drained.delete(r.volumeId);
    this.log.info({ volume: r.volumeId }, 'volume resumed: protected again after a checksum resync');
    return true;
  }
}

/** A drain record as written by finalPoint; anything else is a damaged record (still drained, point unknown). */
function parseDrained(id: string, raw: string, file: string): DrainedPoint {
  let p: Partial<DrainedPoint> | null = null;
  try {
    p = JSON.parse(raw) as Partial<DrainedPoint>;
  } catch {
    // reported below
  }
  const ok = p !== null && typeof p === 'object' && Number.isSafeInteger(p.seq) && typeof p.atMs === 'number' && (p.consistency === 'CRASH' || p.consistency === 'APP') && Array.isArray(p.tags);
  if (ok) return p as DrainedPoint;
  const damaged = `${file} is damaged: ${id} was drained for a failover, but its final point is unknown; \`tidemark resume ${id}\` protects it again, starting with a resync`;
  return { volume: id, seq: 0, atMs: 0, consistency: 'CRASH', tags: [], drainedAt: 0, damaged };
}
