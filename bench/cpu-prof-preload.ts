// Preloaded into a daemon with NODE_OPTIONS=--import=<this file> (Node 20 refuses --cpu-prof in
// NODE_OPTIONS): samples the main thread with the inspector's profiler from start to exit and writes
// <TIDEMARK_CPU_PROF_DIR>/<pid>.cpuprofile, readable by dist/bench/cpuprofile.js or Chrome DevTools.
// TIDEMARK_CPU_PROF_DELAY_MS starts sampling that long after start: the agent's BPF verifier is
// interrupted by the profiler's signals, so its profile begins once the programs are loaded.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.TIDEMARK_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  const delay = Number(process.env.TIDEMARK_CPU_PROF_DELAY_MS ?? 0);
  if (delay > 0) setTimeout(() => session.post('Profiler.start'), delay).unref();
  else session.post('Profiler.start');
  // The in-process session answers synchronously, so this works inside an 'exit' handler.
  process.on('exit', () => {
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
