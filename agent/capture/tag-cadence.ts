// How often an app-consistent capture names its point with its tag (`freeze.tagIntervalMs`,
// `script.tagIntervalMs`): every point is app-consistent, but only one per interval carries the tag, so
// an "hourly" tag marks one point an hour rather than every cycle's (tagged points are kept by retention
// as named points; the others thin like any). Counted from the last point made with the tag; the first
// point after a start is tagged.
export class TagCadence {
  private lastTaggedAt: number | null = null;

  constructor(private readonly intervalMs: number | undefined) {}

  /** Should a point captured at `atMs` carry the tag? */
  due(atMs: number): boolean {
    return this.intervalMs === undefined || this.lastTaggedAt === null || atMs - this.lastTaggedAt >= this.intervalMs;
  }

  /** A point captured at `atMs` was made with the tag. */
  tagged(atMs: number): void {
    this.lastTaggedAt = atMs;
  }
}
