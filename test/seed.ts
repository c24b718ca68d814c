// Replayable randomness for tests: every random choice (kill instants, corrupted bytes, diverged blocks,
// writer patterns, data) comes from one seed, taken from TIDEMARK_SEED or drawn and printed, so a failure
// seen in CI can be replayed exactly with `TIDEMARK_SEED=<n> npx tap <file>`.
import { createCipheriv, createHash, randomInt } from 'node:crypto';
import fc from 'fast-check';
import t from 'tap';

function drawSeed(): number {
  const env = process.env.TIDEMARK_SEED;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`TIDEMARK_SEED must be a non-negative integer, got "${env}"`);
    return n;
  }
  return randomInt(0, 2 ** 31);
}

/** This test process's seed; printed once (on tap's output and stderr) so a failure can be replayed. */
export const SEED = drawSeed();
t.comment(`TIDEMARK_SEED=${SEED}${process.env.TIDEMARK_SEED ? ' (from the environment)' : ' (drawn; set TIDEMARK_SEED to replay)'}`);
process.stderr.write(`TIDEMARK_SEED=${SEED}\n`);

/**
 * A deterministic random stream: AES-128-CTR keystream keyed by sha256(seed, label). Fast enough to fill
 * hundred-MiB images. Separate labels give independent streams, so one part of a test drawing more or
 * fewer numbers (a slower machine, a retry) does not shift what another part draws.
 */
export class Rng {
  private readonly cipher;
  private pool: Buffer = Buffer.alloc(0);
  private at = 0;

  constructor(readonly label: string, seed = SEED) {
    const key = createHash('sha256').update(`${seed}:${label}`).digest();
    this.cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  }

  /** `n` random bytes. */
  bytes(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }

  private u32(): number {
    if (this.at + 4 > this.pool.length) {
      this.pool = this.bytes(4096);
      this.at = 0;
    }
    const v = this.pool.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }

  /** A float in [0, 1) with 53 random bits. */
  float(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }

  /** An integer in [min, max) (as crypto.randomInt). */
  int(min: number, max: number): number {
    if (!(max > min)) throw new Error(`Rng.int: empty range [${min}, ${max})`);
    return min + Math.floor(this.float() * (max - min));
  }

  /** A copy of `items` in random order. */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

/** Every fast-check run in this process draws from the seed (fast-check also prints its path on failure). */
export function seedFastCheck(): void {
  fc.configureGlobal({ ...fc.readConfigureGlobal(), seed: new Rng('fast-check').int(-(2 ** 31), 2 ** 31) });
}
