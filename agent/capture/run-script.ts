// Runs an operator's pre or post script for a capture, bounded in time. A script past its bound is killed
// with its whole process group (children included); a failure carries the script's stderr.
import { spawn } from 'node:child_process';
import { tmError } from '../../common/errors.js';

export function runScript(cmd: string, which: 'pre' | 'post', ms: number, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', cmd], {
      detached: true, // its own process group, so a hung script's children die with it
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env, TIDEMARK_PHASE: which },
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { if (stderr.length < 2000) stderr += d.toString(); });
    const timer = setTimeout(() => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
      reject(tmError('TM_ERR_CAPTURE', `${which} script ran past ${ms} ms and was killed: ${cmd}`));
    }, ms);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(tmError('TM_ERR_CAPTURE', `${which} script failed (${signal ?? `exit ${code}`}): ${cmd}${stderr ? `: ${stderr.trim()}` : ''}`));
    });
  });
}
