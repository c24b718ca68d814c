// The writer's history replayed: which write each block should hold after the writes up to a sequence
// number. The checker advances one replay through increasing sequence numbers instead of starting over.
import type { Write } from './writer.js';

export class Replay {
  /** Per block, the sequence of the last write applied to it (0: never written). */
  readonly last: Uint32Array;
  private next = 0;
  private readonly coveredBy: Map<number, Write>;

  constructor(private readonly history: readonly Write[], blocks: number) {
    this.last = new Uint32Array(blocks);
    this.coveredBy = new Map(history.map((w) => [w.seq, w]));
  }

  /** Apply writes with seq < `seq` (history is in sequence order, one write at a time). */
  advanceBelow(seq: number): void {
    if (this.next > 0 && this.history[this.next - 1]!.seq >= seq) this.reset();
    while (this.next < this.history.length && this.history[this.next]!.seq < seq) {
      const w = this.history[this.next++]!;
      for (let b = w.block; b < w.block + w.blocks; b++) this.last[b] = w.seq;
    }
  }

  /** Apply every write. */
  advanceAll(): void {
    this.advanceBelow(Number.MAX_SAFE_INTEGER);
  }

  private reset(): void {
    this.last.fill(0);
    this.next = 0;
  }

  write(seq: number): Write | undefined {
    return this.coveredBy.get(seq);
  }
}
