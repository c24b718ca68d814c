// Differentials just committed to disk, kept in memory (up to a byte budget) so the next step (upload,
// forward, apply) need not read the file straight back and check it again. The file on disk stays the
// durable truth: anything not in memory, after a restart for instance, is read from it and verified.
import type { Diff } from './hrl.js';

/** Per volume: the differentials written and not yet taken by the next step (DEFAULTS.agent.maxDiffBytes each, a resync window). */
export const RECENT_BYTES = 64 * 1024 * 1024;

export class RecentDiffs {
  private readonly diffs = new Map<number, { diff: Diff; bytes: number }>();
  private bytes = 0;

  constructor(private readonly budget = RECENT_BYTES) {}

  remember(seq: number, diff: Diff | null): void {
    if (!diff) return;
    const bytes = diff.extents.reduce((n, e) => n + e.data.length, 0);
    if (this.bytes + bytes > this.budget) return; // over budget: it will be read from disk
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
    }
  }

  forgetFrom(seq: number): void {
    for (const [s, v] of this.diffs) {
      if (s < seq) continue;
      this.bytes -= v.bytes;
      this.diffs.delete(s);
    }
  }
}
