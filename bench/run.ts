// `npm run bench -- <name>`: run one benchmark, print its table and write bench/results/<name>.json.
// With no name, list the benchmarks. Benchmarks measure; they never fail on a number.
import { closest } from 'fastest-levenshtein';
import { formatTable, machine, missingFigures, writeResults, type Benchmark } from './harness.js';
import { applyBench } from './apply.js';
import { churn } from './churn.js';
import { compression } from './compression.js';
import { consoleBench } from './console.js';
import { dataCapture } from './data-capture.js';
import { dataMode } from './data-mode.js';
import { fanIn } from './fan-in.js';
import { hashTable } from './hash-table.js';
import { initialSync } from './initial-sync.js';
import { objectStore } from './object-store.js';
import { recovery } from './recovery.js';
import { resync } from './resync.js';
import { tracking } from './tracking.js';

export const BENCHMARKS: Record<string, Benchmark> = {
  apply: applyBench,
  churn,
  compression,
  console: consoleBench,
  'data-capture': dataCapture,
  'data-mode': dataMode,
  'fan-in': fanIn,
  'hash-table': hashTable,
  'initial-sync': initialSync,
  'object-store': objectStore,
  recovery,
  resync,
  tracking,
};

function list(): void {
  const names = Object.keys(BENCHMARKS);
  const w = Math.max(...names.map((n) => n.length));
  console.log('usage: npm run bench -- <name>\n\nbenchmarks:');
  for (const n of names) console.log(`  ${n.padEnd(w)}  ${BENCHMARKS[n]!.description}`);
  console.log('\nenvironment: TIDEMARK_BENCH_SIZE_MIB (smaller volume for a trial run), TIDEMARK_BENCH_KEEP=1 (keep bench/work files), TIDEMARK_BENCH_CPU_PROF=1 (daemon CPU profiles), TIDEMARK_FANIN_AGENTS=1 (fan-in: only these agent counts, e.g. "1" or "1,4"), TIDEMARK_DATA_MODE_RPO_ONLY=1 (data-mode: only the RPO runs, to bench/results/data-mode-rpo.json)');
}

async function main(argv: string[]): Promise<number> {
  const name = argv[0];
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    list();
    return 0;
  }
  const bench = BENCHMARKS[name];
  if (!bench) {
    console.error(`unknown benchmark "${name}"; did you mean "${closest(name, Object.keys(BENCHMARKS))}"?`);
    list();
    return 2;
  }
  const m = machine();
  console.log(`${name}: ${bench.description}`);
  console.log(`machine: ${m.cores} cores ${m.cpuModel}, Linux ${m.kernel}, Node ${m.node}, load ${m.loadAvgAtStart.join(' ')}\n`);
  const r = await bench.run();
  console.log('\n' + formatTable(r.table));
  if (r.ratios.length > 0) {
    console.log('\nratios:');
    for (const x of r.ratios) console.log(`  ${x.name}: ${Number.isFinite(x.value) ? x.value.toFixed(3) : 'missing'}${x.target !== undefined ? ` (target ≥ ${x.target.toFixed(2)})` : ''}`);
  }
  const missing = missingFigures(r);
  if (missing.length > 0) console.log(`\nnot observed (null in the results file):\n${missing.map((m) => `  ${m}`).join('\n')}`);
  if (r.quoted.length > 0) {
    console.log('\nquoted, not measured in this run:');
    for (const q of r.quoted) console.log(`  ${q.name} (${q.source}): ${q.figures.map((f) => `${f.name} ${String(f.value)} ${f.unit}`).join(', ')}; ${q.description}`);
  }
  for (const n of r.notes) console.log(`\nnote: ${n}`);
  const file = await writeResults(r.resultsName ?? name, bench.description, m, r);
  console.log(`\nresults: ${file}`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  },
);
