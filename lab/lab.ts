// A local deployment of all three daemons as real child processes on loopback, with its own PKI and
// configs: what `tidemark demo`, the integration tests and the benchmarks run on.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCa, issue } from '../common/pki.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { fetchStatus } from '../cli/status.js';

export type DaemonName = 'agent' | 'ps' | 'mt';
const COMMAND: Record<DaemonName, string> = { agent: 'agent', ps: 'process-server', mt: 'master-target' };
export const TIDEMARK_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'tidemark.js');

export interface LabVolume {
  id: string;
  source: string;
  replica: string;
  /** Extra keys for this volume's entry in the agent's (tracker, capture…) and master target's configs. */
  agent?: Record<string, unknown>;
  mt?: Record<string, unknown>;
}

export interface LabOptions {
  dir: string;
  volumes: LabVolume[];
  agent?: Record<string, unknown>;
  ps?: Record<string, unknown>;
  mt?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** The master target's recovery.roots: where recover may write. Default: the lab folder. */
  recoveryRoots?: string[];
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export class Lab {
  readonly procs = new Map<DaemonName, ChildProcess>();
  readonly configs: Record<DaemonName, string>;
  readonly stateDirs: Record<DaemonName, string>;

  private constructor(readonly opts: LabOptions) {
    const d = opts.dir;
    this.configs = { agent: path.join(d, 'agent.json'), ps: path.join(d, 'process-server.json'), mt: path.join(d, 'master-target.json') };
    this.stateDirs = { agent: path.join(d, 'agent-state'), ps: path.join(d, 'ps-cache'), mt: path.join(d, 'mt-state') };
  }

  /** A folder that already holds the configs and PKI in a lab's layout (as `tidemark reverse` writes them). */
  static existing(opts: LabOptions): Lab {
    return new Lab(opts);
  }

  /** PKI, ports and configs in `opts.dir`. */
  static async create(opts: LabOptions): Promise<Lab> {
    const lab = new Lab(opts);
    const d = opts.dir;
    await fsp.mkdir(d, { recursive: true });
    const pki = path.join(d, 'pki');
    await initCa(pki, { name: 'Tidemark lab CA' });
    await issue(pki, 'agent', 'agent-1');
    await issue(pki, 'process-server', 'ps-1');
    await issue(pki, 'master-target', 'mt-1');
    const psPort = await freePort();
    const mtPort = await freePort();
    const tls = (n: string): Record<string, string> => ({ ca: 'pki/ca.crt', cert: `pki/${n}.crt`, key: `pki/${n}.key` });
    const write = (f: string, o: unknown): Promise<void> => fsp.writeFile(f, JSON.stringify(o, null, 2));
    await write(lab.configs.mt, { name: 'mt-1', stateDir: 'mt-state', tls: tls('mt-1'), listen: { host: '127.0.0.1', port: mtPort }, volumes: opts.volumes.map((v) => ({ id: v.id, replica: v.replica, processServers: ['ps-1'], ...v.mt })), recovery: { roots: opts.recoveryRoots ?? [d] }, ...opts.mt });
    await write(lab.configs.ps, { name: 'ps-1', cacheDir: 'ps-cache', tls: tls('ps-1'), listen: { host: '127.0.0.1', port: psPort }, masterTargets: [{ name: 'mt-1', host: '127.0.0.1', port: mtPort }], volumes: opts.volumes.map((v) => ({ id: v.id, agent: 'agent-1', masterTarget: 'mt-1' })), ...opts.ps });
    await write(lab.configs.agent, { name: 'agent-1', stateDir: 'agent-state', tls: tls('agent-1'), processServer: { name: 'ps-1', host: '127.0.0.1', port: psPort }, volumes: opts.volumes.map((v) => ({ id: v.id, path: v.source, ...v.agent })), ...opts.agent });
    return lab;
  }

  /** Start a daemon; its JSON log is appended to <dir>/<name>.log across restarts. `env` adds to the lab's. */
  start(name: DaemonName, env: NodeJS.ProcessEnv = {}): ChildProcess {
    const child = this.spawn([COMMAND[name], '--config', this.configs[name]], name, env);
    this.procs.set(name, child);
    return child;
  }

  /** Run `tidemark <args>` in the lab folder, output appended to <dir>/<logName>.log. */
  spawn(args: string[], logName: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
    const log = createWriteStream(path.join(this.opts.dir, `${logName}.log`), { flags: 'a' });
    const child = spawn(process.execPath, [TIDEMARK_BIN, ...args], { cwd: this.opts.dir, env: { ...process.env, ...this.opts.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    return child;
  }

  /** The JSON log lines a daemon wrote so far (across restarts). */
  async logLines(logName: string): Promise<Record<string, unknown>[]> {
    const text = await fsp.readFile(path.join(this.opts.dir, `${logName}.log`), 'utf8').catch(() => '');
    return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** SIGKILL: no cleanup at all, as in a crash or power loss. */
  async kill(name: DaemonName): Promise<void> {
    await this.signal(name, 'SIGKILL');
  }

  /** Graceful stop. */
  async stop(name: DaemonName): Promise<number | null> {
    return this.signal(name, 'SIGTERM');
  }

  private async signal(name: DaemonName, sig: NodeJS.Signals): Promise<number | null> {
    const child = this.procs.get(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(sig);
    const code = await exited;
    this.procs.delete(name);
    // The status port file may name a port the next process will not bind.
    await fsp.rm(path.join(this.stateDirs[name], STATUS_PORT_FILE), { force: true });
    return code;
  }

  async stopAll(): Promise<void> {
    for (const n of ['agent', 'ps', 'mt'] as const) await this.stop(n);
  }

  /** The daemon's status snapshot, or null while it is not up. */
  async status(name: DaemonName): Promise<Record<string, unknown> | null> {
    try {
      const port = Number(await fsp.readFile(path.join(this.stateDirs[name], STATUS_PORT_FILE), 'utf8'));
      return await fetchStatus(port);
    } catch {
      return null;
    }
  }

  /**
   * Converged: for every volume no resync is pending, the agent has scanned the whole source after
   * `sinceMs` and found nothing new, its tracker holds no dirty block, its journal is empty, and the master target applied its last
   * differential and holds a consistent replica.
   */
  async converged(sinceMs: number): Promise<boolean> {
    return (await this.notConverged(sinceMs)) === null;
  }

  /** Why the lab has not converged (see `converged`), or null once it has. */
  async notConverged(sinceMs: number): Promise<string | null> {
    const [a, m] = [await this.status('agent'), await this.status('mt')];
    if (!a || !m) return `${!a ? 'agent' : 'master target'} not answering`;
    const av = a.volumes as Record<string, unknown>[];
    const mv = m.volumes as Record<string, unknown>[];
    for (const v of av) {
      const t = mv.find((x) => x.id === v.id);
      const pick = (o: Record<string, unknown> | undefined, keys: string[]): string => JSON.stringify(Object.fromEntries(keys.map((k) => [k, o?.[k]])));
      // A cycle can journal nothing while the tracker still holds blocks to send (data mode waiting for its
      // re-read marker, or folding a gap's writes into dirty blocks): not converged while the tracker holds
      // dirty blocks or reports a gap.
      const inGap = (v.trackerStats as Record<string, unknown> | undefined)?.inGap === 1;
      if (inGap || !(v.consistentAfterResync === true && v.lastCycleBytes === 0 && !(Number(v.dirtyBlocks) > 0) && Number(v.lastCycleAt) > sinceMs && v.journalFiles === 0 && t !== undefined && t.appliedSeq === v.lastSeq && t.consistent === true)) {
        return `${String(v.id)}: agent ${pick(v, ['mode', 'consistentAfterResync', 'lastCycleBytes', 'dirtyBlocks', 'lastCycleAt', 'journalFiles', 'lastSeq', 'trackerStats'])} master target ${pick(t, ['appliedSeq', 'consistent'])} (since ${sinceMs})`;
      }
    }
    return null;
  }

  async waitConverged(sinceMs: number, timeoutMs: number, onTick?: () => Promise<void>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await this.converged(sinceMs))) {
      if (Date.now() > deadline) throw new Error(`not converged after ${timeoutMs} ms: ${await this.notConverged(sinceMs)}`);
      await onTick?.();
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
