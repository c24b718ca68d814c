// `script` in data mode (tracker "data"): an application-consistent tag where the application quiesces
// itself. The pre script returns once the application has stopped writing to the volume and holds it
// stopped; a marker is put in the write stream (DataTracker.streamMark: every write issued so far is
// before it, and a write the application saw complete was issued); the post script lets it go. Nothing is
// read while it is held: the point is the stream up to the marker, journaled as it arrives (the replicator
// holds the view until its collections reach the marker), so the hold is the marker's microseconds.
//
// Between tags nothing is held: every data-mode slice is a CRASH point anyway, so only a tag that is due
// (script.tagIntervalMs; absent: every cycle with writes) runs the scripts.
import { performance } from 'node:perf_hooks';
import { tmError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { Volume } from '../volume.js';
import { pointDropped, type Capture, type CapturedView } from './capture.js';
import { MARK_RETRY_MS, placeMarker, type StreamMarker } from './data-freeze.js';
import { runCaptureScript, type ScriptOptions } from './script.js';
import { TagCadence } from './tag-cadence.js';
import { MinGap, monotonicMs } from '../cadence.js';

/** Tags at most this often (or the agent's cycleIntervalMs if longer), also when they fail and cycles follow each other at once. */
const MIN_GAP_MS = 1000;

export class DataScriptCapture implements Capture {
  readonly kind = 'script';
  readonly stats = {
    /** Tags whose point reached the master target's journal. */
    points: 0,
    failures: 0,
    lastError: null as string | null,
    /** Time the application was held by Tidemark: pre script returned to post script started (ms). */
    lastHoldMs: null as number | null,
    maxHoldMs: null as number | null,
  };
  private readonly cadence: TagCadence;
  private readonly gap: MinGap;
  /** writeCount() after the last post script: the same at the next begin means nothing was written since. */
  private quietCount: number | null = null;

  constructor(private readonly volumeId: string, private readonly volume: Volume, private readonly opts: ScriptOptions, private readonly log: Logger, private readonly marker: StreamMarker, minGapMs = MIN_GAP_MS) {
    this.cadence = new TagCadence(opts.tagIntervalMs);
    this.gap = new MinGap(minGapMs);
  }

  private run(which: 'pre' | 'post', ms: number): Promise<void> {
    return runCaptureScript(this.opts, this.volumeId, this.volume.path, which, ms);
  }

  private fail(step: string, err: unknown): void {
    pointDropped(this.stats, this.log, this.volumeId, step, err);
  }

  private live(): CapturedView {
    return { view: this.volume, consistency: 'FUZZY', tags: [], atMs: Date.now(), release: async () => {} };
  }

  async begin(): Promise<CapturedView> {
    // Not due, a gap in the stream (no point possible), too soon, or nothing written since the last tag.
    const atMono = monotonicMs();
    if (!this.cadence.due(atMono) || !this.marker.pointPossible() || !this.gap.ready()) return this.live();
    if (this.quietCount !== null && this.marker.writeCount() === this.quietCount) return this.live();
    this.gap.mark();
    const post = (): Promise<void> => this.run('post', this.opts.timeoutMs).catch((e) => this.fail('post script', e));
    try {
      await this.run('pre', this.opts.timeoutMs);
    } catch (e) {
      this.fail('pre script', e);
      await post(); // the pre script may have half-quiesced the application
      return this.live();
    }
    const atMs = Date.now();
    const heldAt = performance.now();
    const { token, error: markError } = await placeMarker(this.marker);
    const held = Math.round((performance.now() - heldAt) * 1000) / 1000;
    this.stats.lastHoldMs = held;
    this.stats.maxHoldMs = Math.max(this.stats.maxHoldMs ?? 0, held);
    await post();
    this.quietCount = this.marker.writeCount();
    if (token === null) {
      this.fail('stream marker', markError ?? tmError('TM_ERR_CAPTURE', `the data-mode ring stayed full for ${MARK_RETRY_MS} ms while the application was held; no marker, no tag`));
      return this.live();
    }
    return {
      view: this.volume,
      consistency: 'APP',
      tags: [this.opts.tag],
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
