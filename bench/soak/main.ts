// `npm run soak -- --minutes N [--seed S] [--faults kind,kind|all]`: the chaos soak (docs/SOAK.md).
// Prints the seed first, the faults as they happen, then the table; writes bench/results/soak.json.
// Exit code 1 when the checker found loss or a missing alert.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { machine, writeResults, WORK_DIR } from '../harness.js';
import { DEFAULT_KINDS, FAULT_KINDS, parseKinds } from './faults.js';
import { seedFrom } from './rng.js';
import { passed, printTable, problems, toResult } from './report.js';
import { runSoak } from './soak.js';

const USAGE = `usage: npm run soak -- --minutes N [--seed S] [--faults kind,kind,...|all] [--no-results]
fault kinds: ${FAULT_KINDS.join(', ')} (default: ${DEFAULT_KINDS.join(',')})`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { minutes: { type: 'string' }, seed: { type: 'string' }, faults: { type: 'string' }, 'no-results': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help || values.minutes === undefined) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const minutes = Number(values.minutes);
  if (!(minutes > 0 && minutes <= 24 * 60)) throw new Error(`--minutes is a number of minutes above 0, not "${values.minutes}"`);
  const seed = seedFrom(values.seed ?? process.env.TIDEMARK_SEED);
  const kinds = values.faults ? parseKinds(values.faults) : [...DEFAULT_KINDS];
  const m = machine();
  console.log(`soak: seed ${seed}, ${minutes} min, faults ${kinds.join(',')}`);
  console.log(`replay: npm run soak -- --minutes ${minutes} --seed ${seed} --faults ${kinds.join(',')}`);
  console.log(`machine: ${m.cores} cores ${m.cpuModel}, Linux ${m.kernel}, Node ${m.node}, load ${m.loadAvgAtStart.join(' ')}\n`);
  const run = await runSoak({ minutes, seed, kinds, workDir: path.join(WORK_DIR, 'soak') });
  const res = toResult(run, `work folder (logs, writer history): ${path.join(WORK_DIR, 'soak')}`);
  console.log('\n' + printTable(res));
  for (const p of problems(run)) console.log(`PROBLEM: ${p}`);
  if (!values['no-results']) console.log(`\nresults: ${await writeResults('soak', 'chaos soak: real daemons behind chaos proxies, a stamped writer, seeded faults, checked replica and every recovery point', m, res)}`);
  console.log(`\nseed ${seed}: ${passed(run) ? 'PASSED' : 'FAILED'}`);
  return passed(run) ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.stack ?? e.message : String(e));
    process.exitCode = 1;
  },
);
