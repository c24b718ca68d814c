// Randomized tests replay: the same TIDEMARK_SEED gives the same draws in another process, and a drawn
// seed is printed so that setting it replays the run exactly.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';

const seedModule = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'seed.js')).href;
const script = `const m = await import(${JSON.stringify(seedModule)}); const r = new m.Rng('replay'); console.log('DRAWS ' + r.bytes(16).toString('hex') + ' ' + r.int(0, 1e9) + ' ' + m.SEED);`;

async function draws(seed?: string): Promise<{ draws: string; printed: string }> {
  const env = { ...process.env };
  delete env.TIDEMARK_SEED;
  if (seed !== undefined) env.TIDEMARK_SEED = seed;
  const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env });
  return { draws: /^DRAWS (.*)$/m.exec(stdout)?.[1] ?? '', printed: /TIDEMARK_SEED=(\d+)/.exec(stderr)?.[1] ?? '' };
}

t.test('the same seed gives the same draws in another process', async (t) => {
  const a = await draws('424242');
  const b = await draws('424242');
  t.ok(a.draws.length > 0, 'draws were made');
  t.equal(a.draws, b.draws);
  t.not((await draws('424243')).draws, a.draws, 'another seed, other draws');
});

t.test('a drawn seed is printed, and setting it replays the run', async (t) => {
  const first = await draws();
  t.match(first.printed, /^\d+$/, `the seed was printed (${first.printed})`);
  t.equal((await draws(first.printed)).draws, first.draws, 'TIDEMARK_SEED=<printed> replays it');
});

t.test('a malformed seed is refused, not ignored', async (t) => {
  await t.rejects(draws('12abc'), /TIDEMARK_SEED must be a non-negative integer/);
});
