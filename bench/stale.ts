// `node dist/bench/stale.js`: which committed results in bench/results/ no longer describe the code.
// For each file: when it was measured, whether it has the current results schema (the `quoted` list,
// null for a figure not observed), and the commits since then to the benchmark that writes it and to the
// daemons it measures. Any such commit makes the file stale until the benchmark is run again.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, RESULTS_DIR } from './harness.js';

/** The sources each benchmark's figures come from, besides the shared harness. */
const PRODUCERS: Record<string, string[]> = {
  'fan-in': ['bench/fan-in.ts', 'bench/corpus.ts'],
  'initial-sync': ['bench/initial-sync.ts', 'bench/volume.ts', 'bench/corpus.ts'],
  recovery: ['bench/recovery.ts', 'bench/recovery-report.ts', 'bench/recovery-system.ts', 'bench/recovery-workload.ts'],
  resync: ['bench/resync.ts', 'bench/volume.ts'],
  tracking: ['bench/tracking.ts'],
  'data-mode': ['bench/data-mode.ts', 'bench/tracking.ts'],
  'hash-table': ['bench/hash-table.ts'],
  soak: ['bench/soak'],
};
const SHARED = ['bench/harness.ts', 'bench/system.ts', 'bench/run.ts'];
const DAEMONS = ['agent', 'process-server', 'master-target', 'proto', 'common', 'native'];

const git = (args: string[]): string[] => execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);

/** The commit that wrote this measurement: the oldest one that added its "date" line (hand edits keep it). */
const measuredIn = (file: string, date: string): string | undefined => git(['log', '--format=%H', `-S"date": "${date}"`, '--', file]).at(-1);

const commitsSince = (commit: string | undefined, paths: string[]): string[] => git(['log', '--format=%h %s', ...(commit ? [`${commit}..HEAD`] : []), '--', ...paths]);

let stale = 0;
for (const f of readdirSync(RESULTS_DIR).filter((n) => n.endsWith('.json')).sort()) {
  const name = f.slice(0, -'.json'.length);
  const r = JSON.parse(readFileSync(path.join(RESULTS_DIR, f), 'utf8')) as { date: string; quoted?: unknown };
  const at = measuredIn(path.relative(REPO_ROOT, path.join(RESULTS_DIR, f)), r.date);
  const bench = commitsSince(at, [...(PRODUCERS[name] ?? [`bench/${name}.ts`]), ...SHARED]);
  const code = commitsSince(at, DAEMONS);
  const schema = Array.isArray(r.quoted) ? 'current schema' : 'OLD SCHEMA (no "quoted")';
  const isStale = bench.length > 0 || code.length > 0 || !Array.isArray(r.quoted);
  if (isStale) stale++;
  console.log(`${isStale ? 'STALE' : 'fresh'}  ${name.padEnd(13)} measured ${r.date} (committed in ${at?.slice(0, 7) ?? 'no commit'}); ${schema}; since then ${bench.length} commits to the benchmark, ${code.length} to the daemons`);
  for (const c of bench.slice(0, 5)) console.log(`         bench: ${c}`);
}
console.log(`${stale} stale results file(s): run \`npm run bench -- <name>\` and commit the new file.`);
