// `node dist/bench/cpuprofile.js <file.cpuprofile> [top]`: where a daemon's CPU went, from a V8 profile
// written by `node --cpu-prof` (the benchmarks write them with TIDEMARK_BENCH_CPU_PROF=1).
// Prints self time by function and by source file, and inclusive time of Tidemark's own functions.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { formatTable, REPO_ROOT } from './harness.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function where(cf: CallFrame): string {
  if (!cf.url) return '(native)';
  const u = cf.url.replace(/^file:\/\//, '');
  return u.startsWith(REPO_ROOT) ? path.relative(REPO_ROOT, u) : u.replace(/^.*node_modules\//, 'node_modules/');
}

function label(cf: CallFrame): string {
  return `${cf.functionName || '(anonymous)'} ${where(cf)}:${cf.lineNumber + 1}`;
}

export function summarize(file: string, top = 25): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  p.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const idle = [...selfUs].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);

  const selfFn = new Map<string, number>();
  const selfFile = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, t] of selfUs) {
    const n = byId.get(id)!;
    selfFn.set(label(n.callFrame), (selfFn.get(label(n.callFrame)) ?? 0) + t);
    selfFile.set(where(n.callFrame), (selfFile.get(where(n.callFrame)) ?? 0) + t);
    // Inclusive: every distinct frame of Tidemark's own code on the stack of this sample.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      const w = where(cf);
      if (w.startsWith('dist/') && !w.startsWith('dist/bench')) {
        const l = label(cf);
        if (!seen.has(l)) {
          seen.add(l);
          inclusive.set(l, (inclusive.get(l) ?? 0) + t);
        }
      }
    }
  }
  const ms = (us: number): string => (us / 1000).toFixed(0);
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1)}%`;
  const rows = (m: Map<string, number>, n: number): string[][] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, t]) => [ms(t), pct(t), k]);
  return [
    `${path.basename(file)}: ${ms(total)} ms sampled, of which idle ${ms(idle)} ms (${pct(idle)}); busy ${ms(total - idle)} ms`,
    '',
    'self time by function:',
    formatTable([['ms', 'share', 'function'], ...rows(selfFn, top)]),
    '',
    'self time by file:',
    formatTable([['ms', 'share', 'file'], ...rows(selfFile, 12)]),
    '',
    'inclusive time of Tidemark functions:',
    formatTable([['ms', 'share', 'function'], ...rows(inclusive, top)]),
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]).endsWith(path.join('bench', 'cpuprofile.js'))) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node dist/bench/cpuprofile.js <file.cpuprofile> [top]');
    process.exitCode = 2;
  } else {
    console.log(summarize(file, top ? Number(top) : 25));
  }
}
