// Several filesystems frozen together for a consistency group's cut (agent/group.ts): frozen in a fixed
// order, bounded in time as a whole. Whatever is still frozen when the bound runs out is thawed at once
// (the applications are held no longer than promised) and `expired` tells the caller the cut no longer
// holds. Frozen one after another is still one instant: once a filesystem is frozen no write completes on
// it, so a write that lands on a later one meanwhile can only depend on writes already in the earlier
// ones' points.
import type { Logger } from '../../common/log.js';
import { freeze, thaw } from '../../native/index.js';

export class GroupFreeze {
  /** The bound ran out while something was frozen (or still to be frozen). */
  expired = false;
  /** How long the applications were held: from the first freeze to the last thaw (ms). */
  heldMs = 0;
  private since = 0;
  private readonly frozen: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  private started = false;

  constructor(private readonly mountpoints: readonly string[], private readonly log: Logger, private readonly onExpire: () => void) {}

  /**
   * Freeze every filesystem, in order, with the bound ending at `deadline`. A failure thaws the ones
   * already frozen and throws; running out of time returns with `expired` set and nothing left frozen.
   */
  async freezeAll(deadline: number): Promise<void> {
    this.timer = setTimeout(() => this.expire(), Math.max(0, deadline - Date.now()));
    this.since = performance.now();
    try {
      for (const mp of this.mountpoints) {
        if (this.expired) return;
        await freeze(mp);
        this.frozen.push(mp);
        if (this.expired) await this.thaw(mp); // frozen after the bound (FIFREEZE cannot be cut short)
      }
    } catch (e) {
      await this.thawAll();
      throw e;
    } finally {
      this.started = true;
    }
  }

  /** Thaw one filesystem (its member has been read); a no-op when it is not frozen by us. */
  async thaw(mp: string): Promise<void> {
    const i = this.frozen.indexOf(mp);
    if (i < 0) return;
    this.frozen.splice(i, 1);
    // Everything thawed: the bound has nothing left to guard (and must not report a late expiry).
    if (this.frozen.length === 0 && this.started && this.timer) clearTimeout(this.timer);
    await thaw(mp).catch((e: Error) => this.log.error({ code: 'TM_ERR_CAPTURE', mountpoint: mp, err: e.message }, 'thaw failed'));
    if (this.frozen.length === 0) this.heldMs = performance.now() - this.since;
  }

  async thawAll(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    for (const mp of [...this.frozen].reverse()) await this.thaw(mp);
  }

  private expire(): void {
    this.expired = true;
    this.onExpire();
    void this.thawAll();
  }
}
