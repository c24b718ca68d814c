// Preloaded into a daemon with NODE_OPTIONS=--import=<this file> (Node 20 refuses --cpu-prof in
// NODE_OPTIONS): samples the main thread with the inspector's profiler from start to exit and writes
// <TIDEMARK_CPU_PROF_DIR>/<pid>.cpuprofile, readable by dist/bench/cpuprofile.js or Chrome DevTools.
// TIDEMARK_CPU_PROF_DELAY_MS starts sampling that long after start: the agent's BPF verifier is
// interrupted by the profiler's signals, so its profile begins once the programs are loaded.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
import { constants, PerformanceObserver } from 'node:perf_hooks';

const dir = process.env.TIDEMARK_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  const delay = Number(process.env.TIDEMARK_CPU_PROF_DELAY_MS ?? 0);
  if (delay > 0) setTimeout(() => session.post('Profiler.start'), delay).unref();
  else session.post('Profiler.start');
  // Collections by kind (scavenge, mark-compact...): count and ms, beside the profile as <pid>.gc.json.
  const KINDS: Record<number, string> = { [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb' };
  const gc: Record<string, { count: number; ms: number }> = {};
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = KINDS[(e as unknown as { detail: { kind: number } }).detail.kind] ?? 'other';
      const g = (gc[kind] ??= { count: 0, ms: 0 });
      g.count++;
      g.ms += e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  // The in-process session answers synchronously, so this works inside an 'exit' handler.
  process.on('exit', () => {
    writeFileSync(path.join(dir, `${process.pid}.gc.json`), JSON.stringify(gc));
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
