// Differentials just committed to disk, kept in memory (up to a byte budget) so the next step (upload,
// forward, apply) need not read the file straight back and check it again. The file on disk stays the
// durable truth: anything not in memory, after a restart for instance, is read from it and verified.
import type { Diff } from './hrl.js';

/** Per volume; a window of a few differentials (DEFAULTS.agent.maxDiffBytes each) fits. */
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

  get(seq: number): Diff | undefined {
    return this.diffs.get(seq)?.diff;
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
