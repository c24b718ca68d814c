// `freeze` in data mode (tracker "data"): an application-consistent tag at an exact place in the write
// stream, with the application held for milliseconds. Pre script; the filesystem flushed while the
// application still runs (syncfs); FIFREEZE (it flushes what was written since and blocks new writes);
// a marker put in the stream (DataTracker.streamMark: every write issued so far is before it); FITHAW;
// post script. Nothing is read while frozen: the point is the stream up to the marker, which the tracker
// journals as it comes (agent/replicator.ts holds the view until its collections reach the marker).
//
// Between tags nothing is frozen: every data-mode slice is a CRASH point anyway, so only a tag that is
// due (freeze.tagIntervalMs; absent: every cycle with writes) freezes.
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { tmError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { freeze, thaw } from '../../native/index.js';
import type { Volume } from '../volume.js';
import { pointDropped, type Capture, type CapturedView } from './capture.js';
import { FreezeCapture, type FreezeOptions } from './freeze.js';
import { TagCadence } from './tag-cadence.js';
import { MinGap, monotonicMs } from '../cadence.js';

const run = promisify(execFile);

/** What places the marker: the volume's data-mode tracker. */
export interface StreamMarker {
  /** A marker in the write stream now; its token, or null when the ring is full. */
  streamMark(): number | null;
  /** False while writes lost from the stream wait to be re-read: no point can be made, so no freeze. */
  pointPossible(): boolean;
  /** A count of the device's write requests so far: unchanged means nothing was written since. */
  writeCount(): number;
}

/** How long a full ring is retried while the application is held before the tag is dropped. */
export const MARK_RETRY_MS = 20;

/**
 * A marker in the write stream while the application is held: a full ring empties as the reader takes
 * records, so it is retried briefly. `token` null: no marker (`error` says why, if the tracker threw).
 */
export async function placeMarker(marker: StreamMarker): Promise<{ token: number | null; error: unknown }> {
  try {
    for (const end = performance.now() + MARK_RETRY_MS; ; ) {
      const token = marker.streamMark();
      if (token !== null || performance.now() >= end) return { token, error: null };
      await new Promise((r) => setTimeout(r, 1));
    }
  } catch (e) {
    return { token: null, error: e };
  }
}
/** Freezes at most this often (or the agent's cycleIntervalMs if longer), also when tags fail and cycles follow each other at once. */
const MIN_GAP_MS = 1000;
/** Hold times kept for the status percentiles. */
const HOLDS_KEPT = 256;

export class DataFreezeCapture implements Capture {
  readonly kind = 'freeze';
  readonly stats = {
    /** Tags whose point reached the master target's journal (the stream up to the marker, no loss). */
    points: 0,
    failures: 0,
    lastError: null as string | null,
    /** Freezes made (each one a tag attempt). */
    freezes: 0,
    /**
     * Time the application was held, at most: FIFREEZE called to FITHAW returned (ms). FIFREEZE's own
     * time (the filesystem's flush, and the kernel's RCU grace periods as it blocks writers) is part of it.
     */
    lastHoldMs: null as number | null,
    maxHoldMs: null as number | null,
    holdP50Ms: null as number | null,
    holdP99Ms: null as number | null,
    /** What the tag adds to a freeze: FIFREEZE returned to FITHAW returned (the marker, the thaw), ms. */
    lastFrozenMs: null as number | null,
    maxFrozenMs: null as number | null,
    frozenP50Ms: null as number | null,
    /** Of the last hold: FIFREEZE itself, and FITHAW. */
    lastFreezeMs: null as number | null,
    lastThawMs: null as number | null,
    /** Time spent flushing before the freeze (the application not held). */
    lastSyncMs: null as number | null,
  };
  private readonly cadence: TagCadence;
  private readonly base: FreezeCapture;
  private readonly holds: number[] = [];
  private readonly frozen: number[] = [];
  private readonly gap: MinGap;
  /** writeCount() just after the last thaw: the same at the next begin means only the freeze itself wrote. */
  private quietCount: number | null = null;

  constructor(private readonly volumeId: string, private readonly volume: Volume, private readonly opts: FreezeOptions, stateDir: string, private readonly log: Logger, private readonly marker: StreamMarker, minGapMs = MIN_GAP_MS) {
    this.cadence = new TagCadence(opts.tagIntervalMs);
    this.gap = new MinGap(minGapMs);
    this.base = new FreezeCapture(volumeId, volume, opts, stateDir, log);
  }

  /** Run this volume's pre or post script (a consistency group runs them around its own cut). */
  script(which: 'pre' | 'post', ms: number): Promise<void> {
    return this.base.script(which, ms);
  }

  /** The same checks as capture "freeze": the mountpoint is this volume's, stateDir is not on it; thaw leftovers. */
  open(): Promise<void> {
    return this.base.open();
  }

  private fail(step: string, err: unknown): void {
    pointDropped(this.stats, this.log, this.volumeId, step, err);
  }

  private live(): CapturedView {
    return { view: this.volume, consistency: 'FUZZY', tags: [], atMs: Date.now(), release: async () => {} };
  }

  private held(ms: number, frozenMs: number): void {
    this.holds.push(ms);
    this.frozen.push(frozenMs);
    if (this.holds.length > HOLDS_KEPT) {
      this.holds.shift();
      this.frozen.shift();
    }
    const q = (xs: number[], p: number): number => {
      const s = [...xs].sort((a, b) => a - b);
      return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
    };
    const r = (x: number): number => Math.round(x * 1000) / 1000;
    this.stats.lastHoldMs = r(ms);
    this.stats.maxHoldMs = r(Math.max(this.stats.maxHoldMs ?? 0, ms));
    this.stats.holdP50Ms = r(q(this.holds, 0.5));
    this.stats.holdP99Ms = r(q(this.holds, 0.99));
    this.stats.lastFrozenMs = r(frozenMs);
    this.stats.maxFrozenMs = r(Math.max(this.stats.maxFrozenMs ?? 0, frozenMs));
    this.stats.frozenP50Ms = r(q(this.frozen, 0.5));
  }

  async begin(): Promise<CapturedView> {
    // Not due: the data-mode slice is a CRASH point of its own; nothing to hold.
    // Nor while the stream has a gap (its point could not be made), nor more often than MIN_GAP_MS.
    // Nor when nothing was written since the last tag's thaw (the freeze's own superblock writes would
    // otherwise call for a freeze every cycle on an idle filesystem).
    const atMono = monotonicMs();
    if (!this.cadence.due(atMono) || !this.marker.pointPossible() || !this.gap.ready()) return this.live();
    if (this.quietCount !== null && this.marker.writeCount() === this.quietCount) return this.live();
    this.gap.mark();
    const { mountpoint, timeoutMs } = this.opts;
    const post = (): Promise<void> => this.base.script('post', timeoutMs).catch((e) => this.fail('post script', e));
    try {
      await this.base.script('pre', timeoutMs);
    } catch (e) {
      this.fail('pre script', e);
      await post();
      return this.live();
    }
    // Write back what the application wrote so far while it still runs: the freeze then has little
    // left to flush, and that flush is what the application waits for.
    const s0 = performance.now();
    await run('sync', ['-f', mountpoint], { timeout: timeoutMs }).catch((e) => this.log.warn({ err: (e as Error).message }, 'sync before the freeze failed; the freeze flushes instead'));
    this.stats.lastSyncMs = Math.round((performance.now() - s0) * 1000) / 1000;
    const t0 = performance.now();
    try {
      await freeze(mountpoint);
    } catch (e) {
      this.fail('freeze', e);
      await post();
      return this.live();
    }
    const atMs = Date.now();
    const frozenAt = performance.now();
    const { token, error: markError } = await placeMarker(this.marker);
    const t1 = performance.now();
    await thaw(mountpoint).catch((e) => this.log.error({ err: (e as Error).message }, 'thaw failed'));
    this.stats.lastThawMs = Math.round((performance.now() - t1) * 1000) / 1000;
    const thawedAt = performance.now();
    this.quietCount = this.marker.writeCount();
    this.stats.lastFreezeMs = Math.round((frozenAt - t0) * 1000) / 1000;
    this.stats.freezes++;
    this.held(thawedAt - t0, thawedAt - frozenAt);
    await post();
    if (token === null) {
      this.fail('stream marker', markError ?? tmError('TM_ERR_CAPTURE', `the data-mode ring stayed full for ${MARK_RETRY_MS} ms while frozen; no marker, no tag`));
      return this.live();
    }
    this.log.debug({ volume: this.volumeId, holdMs: thawedAt - t0, token }, 'freeze tag marked in the write stream');
    const tag = this.opts.tag;
    return {
      view: this.volume,
      consistency: 'APP',
      tags: [tag],
      atMs,
      streamMark: token,
      release: async (seq?: number) => {
        if (seq !== undefined) {
          this.stats.points++;
          this.cadence.tagged(atMono);
          return;
        }
        this.fail('tag', tmError('TM_ERR_CAPTURE', 'the write stream up to the tag could not be journaled as a point (writes dropped or not yet re-read, or a resync began); the tag is dropped'));
      },
    };
  }
}
