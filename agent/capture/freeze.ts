// `freeze`: an application-consistent point. Run the pre script (e.g. a database checkpoint), freeze the
// mounted filesystem (FIFREEZE: it flushes and blocks new writes), read the point from the device, thaw,
// run the post script. Everything is bounded by `timeoutMs`: a script past it is killed; a freeze past
// it is thawed at once. Either way the tag is dropped, the error logged (TM_ERR_CAPTURE) and the data goes
// out as fuzzy; the volume is never left frozen and replication never stops for a misbehaving script.
import { promises as fsp } from 'node:fs';
import { tmError, wrap } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { freeze, thaw } from '../../native/index.js';
import type { Volume } from '../volume.js';
import { pointDropped, type Capture, type CapturedView } from './capture.js';
import { heldPoint } from './held-point.js';
import { TagCadence } from './tag-cadence.js';
import { monotonicMs } from '../cadence.js';
import { runScript } from './run-script.js';

export interface FreezeOptions {
  mountpoint: string;
  pre?: string;
  post?: string;
  timeoutMs: number;
  tag: string;
  /** Tag one point per this interval only (agent/capture/tag-cadence.ts); absent: every point. */
  tagIntervalMs?: number;
}

export class FreezeCapture implements Capture {
  readonly kind = 'freeze';
  readonly stats = { points: 0, failures: 0, lastError: null as string | null };
  private readonly cadence: TagCadence;

  constructor(private readonly volumeId: string, private readonly volume: Volume, private readonly opts: FreezeOptions, private readonly stateDir: string, private readonly log: Logger) {
    this.cadence = new TagCadence(opts.tagIntervalMs);
  }

  async open(): Promise<void> {
    const mp = await fsp.stat(this.opts.mountpoint).catch((e) => { throw wrap(e, `freeze mountpoint ${this.opts.mountpoint}`, { path: this.opts.mountpoint }); });
    const dev = await fsp.stat(this.volume.path);
    if (dev.isBlockDevice() && mp.dev !== dev.rdev) {
      throw tmError('TM_ERR_CONFIG_INVALID', `freeze.mountpoint ${this.opts.mountpoint} is not a filesystem on ${this.volume.path}; name where this volume is mounted`, { path: this.opts.mountpoint });
    }
    // An agent killed while the filesystem was frozen left it frozen: thaw it (EINVAL: it was not).
    await thaw(this.opts.mountpoint).then(
      () => this.log.warn({ mountpoint: this.opts.mountpoint }, 'thawed a filesystem left frozen (by an agent that was killed?)'),
      () => {},
    );
    // Writing the journal into the frozen filesystem would wait for the thaw that waits for the journal.
    if ((await fsp.stat(this.stateDir)).dev === mp.dev) {
      throw tmError('TM_ERR_CONFIG_INVALID', `the agent's stateDir ${this.stateDir} is on the filesystem it freezes (${this.opts.mountpoint}); put it elsewhere`, { path: this.stateDir });
    }
  }

  private fail(step: string, err: unknown): void {
    pointDropped(this.stats, this.log, this.volumeId, step, err);
  }

  async begin(): Promise<CapturedView> {
    // One bound for the pre script and the time frozen together: the application is held for at most that.
    const deadline = Date.now() + this.opts.timeoutMs;
    const fuzzy = (): CapturedView => ({ view: this.volume, consistency: 'FUZZY', tags: [], atMs: Date.now(), release: () => this.script('post', this.opts.timeoutMs).catch((e) => this.fail('post script', e)) });
    try {
      await this.script('pre', this.opts.timeoutMs);
    } catch (e) {
      this.fail('pre script', e);
      return fuzzy();
    }
    try {
      await freeze(this.opts.mountpoint);
    } catch (e) {
      this.fail('freeze', e);
      return fuzzy();
    }
    const atMs = Date.now();
    const atMono = monotonicMs();
    const tagged = this.cadence.due(atMono);
    return heldPoint({
      view: this.volume,
      tag: tagged ? this.opts.tag : null,
      atMs,
      deadline,
      end: () => thaw(this.opts.mountpoint).catch((e) => this.log.error({ err: (e as Error).message }, 'thaw failed')),
      expired: () => this.fail('freeze', tmError('TM_ERR_CAPTURE', `pre script and freeze together ran past ${this.opts.timeoutMs} ms; thawed`)),
      after: () => this.script('post', this.opts.timeoutMs).catch((e) => this.fail('post script', e)),
      made: () => {
        this.stats.points++;
        if (tagged) this.cadence.tagged(atMono);
      },
    });
  }

  /** Run the pre or post script for at most `ms`; past it, the script and its children are killed. (A consistency group runs them around its freeze of all members: agent/group.ts.) */
  script(which: 'pre' | 'post', ms: number): Promise<void> {
    const cmd = this.opts[which];
    if (!cmd) return Promise.resolve();
    return runScript(cmd, which, ms, { TIDEMARK_VOLUME: this.volumeId, TIDEMARK_TAG: this.opts.tag, TIDEMARK_MOUNTPOINT: this.opts.mountpoint });
  }
}
