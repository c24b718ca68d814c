// A capture provider gives a cycle its view of the volume, and that view decides the point's class.
// Implementations: none.ts (live volume, fuzzy), reflink.ts (FICLONE snapshot, crash-consistent),
// freeze.ts (FIFREEZE with scripts, app-consistent), data-freeze.ts (FIFREEZE, a marker in the data-mode
// write stream, FITHAW: app-consistent with the application held for milliseconds).
import { wrap } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { Consistency } from '../../proto/messages.js';
import type { VolumeReader } from '../volume.js';

/** What every app-consistent capture counts of its failures (status captureStats). */
export interface FailureStats {
  failures: number;
  lastError: string | null;
}

/** An app-consistent point given up at `step`: counted and named in status and the log; the differential is fuzzy. */
export function pointDropped(stats: FailureStats, log: Logger, volumeId: string, step: string, err: unknown): void {
  const e = wrap(err, `${step} of volume ${volumeId}`, { volume: volumeId });
  stats.failures++;
  stats.lastError = e.message;
  log.error({ code: 'TM_ERR_CAPTURE', volume: volumeId, cause: e.code, err: e.message }, 'app-consistent point dropped; this differential is fuzzy');
}

export interface CapturedView {
  view: VolumeReader;
  consistency: Consistency;
  tags: string[];
  /** When the view was taken (ms since the epoch). */
  atMs: number;
  /** The view stays as taken until released (a snapshot): a point may be read from it over several cycles. */
  lasting?: boolean;
  /**
   * Data mode: the token of a marker put in the write stream while the application was held (freeze).
   * The point is the stream cut exactly there; the view is held until the tracker's collections reach it.
   */
  streamMark?: number;
  /**
   * Every block of the point has been read from `view`: returns whether the view stayed consistent the
   * whole time (a freeze held past its bound was thawed early: not a point). Called before release.
   */
  settle?(): Promise<boolean>;
  /** Done with the view. `seq`: the differential that made it a recovery point (a snapshot may keep it). */
  release(seq?: number): Promise<void>;
}

export interface Capture {
  readonly kind: string;
  /** Counters shown in status (freeze: points made, failures, last error). */
  readonly stats?: Readonly<Record<string, unknown>>;
  /** Check the provider can work here (clear error at start, not at every cycle); clean up after a crash. */
  open?(): Promise<void>;
  begin(): Promise<CapturedView>;
}
