// A small seeded generator (mulberry32): the whole soak — writes, fault schedule, proxy chunking — is
// drawn from one seed, so a failing run is replayed by passing the same --seed.
export class Rng {
  private s: number;

  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo));
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length)]!;
  }

  /** A child generator with its own stream, so one consumer's draws do not shift another's. */
  fork(): Rng {
    return new Rng(this.int(1, 0x7fffffff));
  }
}

/** A seed from the command line or TIDEMARK_SEED, else drawn (and printed by the caller). */
export function seedFrom(text: string | undefined): number {
  if (text === undefined || text === '') return Math.floor(Math.random() * 0x7fffffff) + 1;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0 || n > 0x7fffffff) throw new Error(`a seed is a whole number from 1 to ${0x7fffffff}, not "${text}"`);
  return n;
}
