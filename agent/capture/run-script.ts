// Runs an operator's pre or post script for a capture, bounded in time. A script past its bound is killed
// with its whole process group (children included).
//
// A script's command line and output may hold secrets (a database password on the command line, a
// connection string in an error message), and what fails here reaches /status, which anyone on the host
// can read, and the log. So a failure names the script by its program name and says how it ended, nothing
// more; its output is discarded (a script that wants a record of its own writes one).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { tmError } from '../../common/errors.js';

/**
 * What a failure may say of a command line: the program's base name (leading VAR=value assignments
 * skipped), and only when it is a plain word; else just "script".
 */
export function scriptName(cmd: string): string {
  const words = cmd.trim().split(/\s+/).filter((w) => !/^[A-Za-z_][A-Za-z0-9_]*=/.test(w));
  const name = path.basename(words[0] ?? '');
  return /^[A-Za-z0-9_.+-]{1,64}$/.test(name) ? name : 'script';
}

export function runScript(cmd: string, which: 'pre' | 'post', ms: number, env: NodeJS.ProcessEnv): Promise<void> {
  const name = `${which} script (${scriptName(cmd)})`;
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', cmd], {
      detached: true, // its own process group, so a hung script's children die with it
      stdio: 'ignore',
      env: { ...process.env, ...env, TIDEMARK_PHASE: which },
    });
    const timer = setTimeout(() => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
      reject(tmError('TM_ERR_CAPTURE', `${name} ran past ${ms} ms and was killed`));
    }, ms);
    child.on('error', (e) => { clearTimeout(timer); reject(tmError('TM_ERR_CAPTURE', `${name} could not be started: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(tmError('TM_ERR_CAPTURE', `${name} failed (${signal ? `signal ${signal}` : `exit status ${code}`})`));
    });
  });
}
