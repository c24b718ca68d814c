// Differentials just committed to disk, kept in memory (up to a byte budget) so the next step (upload,
// forward, apply) need not read the file straight back and check it again. The file on disk stays the
// durable truth: anything not in memory, after a restart for instance, is read from it and verified.
// A differential is this object's until take() hands it over: one it does not keep (over budget) or
// forgets untaken has its pooled bodies (Extent.release) given back, as nothing else reads them once
// the file is committed; the next step then reads the file, into buffers of its own.
import type { Diff } from './hrl.js';

/** Give back a differential's pooled bodies, each once. */
function release(d: Diff): void {
  for (const e of d.extents) {
    const r = e.release;
    e.release = undefined;
    r?.();
  }
}

/** Per volume: the differentials written and not yet taken by the next step (DEFAULTS.agent.maxDiffBytes each, a resync window). */
export const RECENT_BYTES = 64 * 1024 * 1024;

export class RecentDiffs {
  private readonly diffs = new Map<number, { diff: Diff; bytes: number }>();
  private bytes = 0;

  constructor(private readonly budget = RECENT_BYTES) {}

  remember(seq: number, diff: Diff | null): void {
    if (!diff) return;
    this.forgetFrom(seq, seq); // a seq remembered again (written again): the older copy is not taken any more
    const bytes = diff.extents.reduce((n, e) => n + e.data.length, 0);
    if (this.bytes + bytes > this.budget) {
      release(diff); // over budget: it will be read from disk
      return;
    }
    this.diffs.set(seq, { diff, bytes });
    this.bytes += bytes;
  }

  /**
   * The differential, handed over once: its one next step (upload, forward, apply) takes it, and its bytes
   * leave the budget then rather than at the acknowledgement, so the next one just written fits. A repeat
   * (a resend after a reconnect, an apply retried) reads the file, as after a restart.
   */
  take(seq: number): Diff | undefined {
    const v = this.diffs.get(seq);
    if (!v) return undefined;
    this.diffs.delete(seq);
    this.bytes -= v.bytes;
    return v.diff;
  }

  /** Forget everything up to `seq` (acknowledged or applied). */
  forgetThrough(seq: number): void {
    for (const [s, v] of this.diffs) {
      if (s > seq) continue;
      this.bytes -= v.bytes;
      this.diffs.delete(s);
      release(v.diff);
    }
  }

  /** Forget everything from `seq` on (up to `through`): discarded, or written again. */
  forgetFrom(seq: number, through = Infinity): void {
    for (const [s, v] of this.diffs) {
      if (s < seq || s > through) continue;
      this.bytes -= v.bytes;
      this.diffs.delete(s);
      release(v.diff);
    }
  }
}
