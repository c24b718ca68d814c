// Runs commands on the protected machine through the system OpenSSH client. The host key is always
// checked against a known_hosts file (StrictHostKeyChecking=yes): push-install hands the machine a
// private key and a certificate, so it must never talk to a machine it cannot identify.
import { spawn } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { tmError, type TidemarkError } from '../../common/errors.js';

export interface SshTarget {
  host: string;
  user: string;
  port: number;
  /** Private key file given to ssh -i. */
  identity: string;
  /** The only known_hosts file consulted when `onlyKnownHosts` is set (the global one is ignored then). */
  knownHosts: string;
  onlyKnownHosts: boolean;
  /**
   * Socket of a shared master connection (ControlMaster): one SSH handshake for the whole run instead
   * of one per step. Must be in a folder only we can write; close() ends the master.
   */
  controlPath?: string;
}

export interface RunResult { code: number; stdout: string; stderr: string }

interface RunOptions {
  /** What push-install was doing, for the error: "prerequisites", "upload package", ... */
  step: string;
  /** A local file streamed to the remote command's stdin. */
  inputFile?: string;
  input?: string | Buffer;
  timeoutMs?: number;
}

/** One argument for a POSIX shell, quoted so nothing in it is interpreted. */
export function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const HOST_KEY_RE = /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key for .* has changed|No \S+ host key is known/i;

export function pushError(step: string, host: string, message: string, cause?: unknown): TidemarkError {
  return tmError('TM_ERR_PUSH_INSTALL', `${host}: ${step}: ${message}`, { step, host }, cause);
}

export class Ssh {
  /** Set once the probe found a non-root login that may use sudo: every command then runs under sudo -n. */
  sudo = false;

  constructor(readonly target: SshTarget) {}

  get where(): string {
    return `${this.target.user}@${this.target.host}:${this.target.port}`;
  }

  private args(): string[] {
    const t = this.target;
    return [
      '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=yes',
      '-o', `UserKnownHostsFile=${t.knownHosts}`,
      ...(t.onlyKnownHosts ? ['-o', 'GlobalKnownHostsFile=/dev/null'] : []),
      '-o', 'IdentitiesOnly=yes',
      '-o', 'ConnectTimeout=15',
      '-o', 'ServerAliveInterval=15',
      '-o', 'LogLevel=ERROR',
      // ControlPersist bounds the master's life even if close() is never reached (a killed run).
      ...(t.controlPath === undefined ? [] : ['-o', 'ControlMaster=auto', '-o', `ControlPath=${t.controlPath}`, '-o', 'ControlPersist=60']),
      '-i', t.identity,
      '-p', String(t.port),
      '-l', t.user,
      t.host,
    ];
  }

  /** Run a POSIX shell script remotely (as root: directly or through sudo -n). Never throws for a non-zero exit. */
  run(script: string, opts: RunOptions): Promise<RunResult> {
    const command = `${this.sudo ? 'sudo -n ' : ''}sh -c ${q(script)}`;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const child = spawn('ssh', [...this.args(), command], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGTERM');
      }, timeoutMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(pushError(opts.step, this.target.host, `cannot run ssh: ${e.message} (install the OpenSSH client)`, e));
      });
      // The remote side may close stdin early (e.g. a failing command): that is reported by its exit status.
      child.stdin.on('error', () => undefined);
      if (opts.inputFile !== undefined) {
        const rs = createReadStream(opts.inputFile);
        rs.once('error', (e) => {
          stderr += `read ${opts.inputFile}: ${e.message}\n`;
          child.kill('SIGTERM');
        });
        rs.pipe(child.stdin);
      } else {
        child.stdin.end(opts.input ?? '');
      }
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (timedOut) {
          reject(pushError(opts.step, this.target.host, `no answer from ${this.where} within ${Math.round(timeoutMs / 1000)} s`));
          return;
        }
        // 255 is ssh's own failure (connection, authentication, host key); our scripts never exit 255.
        if (code === 255) {
          reject(this.connectError(stderr, opts.step));
          return;
        }
        resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
      });
    });
  }

  /** End the shared master connection, if one was opened. */
  async close(): Promise<void> {
    if (this.target.controlPath === undefined || !existsSync(this.target.controlPath)) return;
    await new Promise<void>((resolve) => {
      const child = spawn('ssh', [...this.args().slice(0, -1), '-O', 'exit', this.target.host], { stdio: 'ignore' });
      child.once('error', () => resolve());
      child.once('close', () => resolve());
    });
  }

  /** Like run, but a non-zero exit is a TM_ERR_PUSH_INSTALL naming the step, with the remote stderr. */
  async check(script: string, opts: RunOptions): Promise<string> {
    const r = await this.run(script, opts);
    if (r.code !== 0) {
      const detail = (r.stderr.trim() || r.stdout.trim() || '(no output)').split('\n').slice(-15).join('\n');
      throw pushError(opts.step, this.target.host, `remote command failed (exit ${r.code}):\n${detail}`);
    }
    return r.stdout;
  }

  private connectError(stderr: string, step: string): TidemarkError {
    const said = stderr.trim().split('\n').filter((l) => l.trim() !== '').slice(-6).join('\n');
    const t = this.target;
    if (HOST_KEY_RE.test(stderr)) {
      const entry = t.port === 22 ? t.host : `[${t.host}]:${t.port}`;
      return tmError('TM_ERR_HOST_KEY',
        `${t.host}: the SSH host key of ${t.host} port ${t.port} is not the one recorded for "${entry}" in ${t.knownHosts} ` +
        `(or none is recorded); nothing was changed on the machine. Compare the machine's key fingerprint ` +
        `(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub, run on it) with the one you expect, then record it in ${t.knownHosts}.\nssh said: ${said}`,
        { host: t.host, port: t.port, path: t.knownHosts, step });
    }
    return pushError(step, t.host, `ssh to ${this.where} failed: ${said || 'exit 255'}`);
  }
}
