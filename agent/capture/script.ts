// `script`: an application-consistent point where the application quiesces itself. The pre script
// returns once the application has stopped writing to the volume and holds it stopped (a database lock
// held by a helper process, a VM paused, a writer told to wait); the point is read from the volume; the
// post script lets the application go. No filesystem freeze, so it works for image files and raw volumes
// without a mounted filesystem. One bound (`timeoutMs`) covers the pre script and the read: past it the
// post script is run at once, the tag dropped and the differential sent fuzzy (TM_ERR_CAPTURE).
import type { Logger } from '../../common/log.js';
import { tmError } from '../../common/errors.js';
import type { Volume } from '../volume.js';
import { pointDropped, type Capture, type CapturedView } from './capture.js';
import { heldPoint } from './held-point.js';
import { TagCadence } from './tag-cadence.js';
import { monotonicMs } from '../cadence.js';
import { runScript } from './run-script.js';

export interface ScriptOptions {
  pre: string;
  post?: string;
  timeoutMs: number;
  tag: string;
  /** Tag one point per this interval only (agent/capture/tag-cadence.ts); absent: every point. */
  tagIntervalMs?: number;
}

/** The pre or post script of a `script` capture (absent: nothing to run), with the environment it is documented to get. */
export function runCaptureScript(opts: ScriptOptions, volumeId: string, volumePath: string, which: 'pre' | 'post', ms: number): Promise<void> {
  const cmd = which === 'pre' ? opts.pre : opts.post;
  if (!cmd) return Promise.resolve();
  return runScript(cmd, which, ms, { TIDEMARK_VOLUME: volumeId, TIDEMARK_TAG: opts.tag, TIDEMARK_PATH: volumePath });
}

export class ScriptCapture implements Capture {
  readonly kind = 'script';
  readonly stats = { points: 0, failures: 0, lastError: null as string | null };
  private readonly cadence: TagCadence;

  constructor(private readonly volumeId: string, private readonly volume: Volume, private readonly opts: ScriptOptions, private readonly log: Logger) {
    this.cadence = new TagCadence(opts.tagIntervalMs);
  }

  private run(which: 'pre' | 'post', ms: number): Promise<void> {
    return runCaptureScript(this.opts, this.volumeId, this.volume.path, which, ms);
  }

  private fail(step: string, err: unknown): void {
    pointDropped(this.stats, this.log, this.volumeId, step, err);
  }

  async begin(): Promise<CapturedView> {
    const deadline = Date.now() + this.opts.timeoutMs;
    const post = (): Promise<void> => this.run('post', this.opts.timeoutMs).catch((e) => this.fail('post script', e));
    try {
      await this.run('pre', this.opts.timeoutMs);
    } catch (e) {
      this.fail('pre script', e);
      await post(); // the pre script may have half-quiesced the application
      return { view: this.volume, consistency: 'FUZZY', tags: [], atMs: Date.now(), release: async () => {} };
    }
    const atMs = Date.now();
    const atMono = monotonicMs();
    const tagged = this.cadence.due(atMono);
    return heldPoint({
      view: this.volume,
      tag: tagged ? this.opts.tag : null,
      atMs,
      deadline,
      end: post,
      expired: () => this.fail('quiesce', tmError('TM_ERR_CAPTURE', `pre script and read together ran past ${this.opts.timeoutMs} ms; the application was let go`)),
      made: () => {
        this.stats.points++;
        if (tagged) this.cadence.tagged(atMono);
      },
    });
  }
}
