// Several agents and master targets around one process server, as real child processes on loopback with
// one PKI: what the fan-in test and benchmark run on. (lab/lab.ts is the one-of-each deployment.)
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { initCa, issue } from '../common/pki.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { freePort, TIDEMARK_BIN } from './lab.js';
import { fetchStatus } from '../cli/status.js';

export interface FleetVolume {
  id: string;
  agent: string;
  masterTarget: string;
  source: string;
  replica: string;
}

export interface FleetOptions {
  dir: string;
  agents: string[];
  masterTargets: string[];
  volumes: FleetVolume[];
  /** Extra keys for every agent's, the process server's, every master target's config. */
  agent?: Record<string, unknown>;
  ps?: Record<string, unknown>;
  mt?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

type Role = 'agent' | 'process-server' | 'master-target';
type Status = Record<string, unknown>;

export const PS = 'ps-1';

export class Fleet {
  readonly procs = new Map<string, ChildProcess>();
  private readonly roles = new Map<string, Role>();

  private constructor(readonly opts: FleetOptions) {
    for (const a of opts.agents) this.roles.set(a, 'agent');
    for (const m of opts.masterTargets) this.roles.set(m, 'master-target');
    this.roles.set(PS, 'process-server');
  }

  /** PKI, ports and one config per node in `opts.dir`: <node>.json, state in <node>-state. */
  static async create(opts: FleetOptions): Promise<Fleet> {
    const f = new Fleet(opts);
    const d = opts.dir;
    await fsp.mkdir(d, { recursive: true });
    const pki = path.join(d, 'pki');
    await initCa(pki, { name: 'Tidemark fleet CA' });
    for (const [name, role] of f.roles) await issue(pki, role, name);
    const tls = (n: string): Record<string, string> => ({ ca: 'pki/ca.crt', cert: `pki/${n}.crt`, key: `pki/${n}.key` });
    const write = (n: string, o: unknown): Promise<void> => fsp.writeFile(f.config(n), JSON.stringify(o, null, 2));
    const psPort = await freePort();
    const mtPorts = new Map<string, number>();
    for (const m of opts.masterTargets) mtPorts.set(m, await freePort());
    for (const m of opts.masterTargets) {
      const vols = opts.volumes.filter((v) => v.masterTarget === m).map((v) => ({ id: v.id, replica: v.replica, processServers: [PS] }));
      await write(m, { name: m, stateDir: `${m}-state`, tls: tls(m), listen: { host: '127.0.0.1', port: mtPorts.get(m) }, volumes: vols, ...opts.mt });
    }
    await write(PS, {
      name: PS, cacheDir: `${PS}-state`, tls: tls(PS), listen: { host: '127.0.0.1', port: psPort },
      masterTargets: opts.masterTargets.map((m) => ({ name: m, host: '127.0.0.1', port: mtPorts.get(m) })),
      volumes: opts.volumes.map((v) => ({ id: v.id, agent: v.agent, masterTarget: v.masterTarget })),
      ...opts.ps,
    });
    for (const a of opts.agents) {
      const vols = opts.volumes.filter((v) => v.agent === a).map((v) => ({ id: v.id, path: v.source }));
      await write(a, { name: a, stateDir: `${a}-state`, tls: tls(a), processServer: { name: PS, host: '127.0.0.1', port: psPort }, volumes: vols, ...opts.agent });
    }
    return f;
  }

  config(node: string): string {
    return path.join(this.opts.dir, `${node}.json`);
  }

  stateDir(node: string): string {
    return path.join(this.opts.dir, `${node}-state`);
  }

  /** Start a node (an agent, PS, or a master target); its JSON log is appended to <dir>/<node>.log. */
  start(node: string): ChildProcess {
    const role = this.roles.get(node);
    if (!role) throw new Error(`no node ${node} in this fleet`);
    const log = createWriteStream(path.join(this.opts.dir, `${node}.log`), { flags: 'a' });
    const child = spawn(process.execPath, [TIDEMARK_BIN, role, '--config', this.config(node)], { cwd: this.opts.dir, env: { ...process.env, ...this.opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    this.procs.set(node, child);
    return child;
  }

  startAll(): void {
    for (const n of [...this.opts.masterTargets, PS, ...this.opts.agents]) this.start(n);
  }

  /** SIGSTOP: the process is hung with its connections open (a master target that stopped answering). */
  pause(node: string): void {
    this.procs.get(node)?.kill('SIGSTOP');
  }

  resume(node: string): void {
    this.procs.get(node)?.kill('SIGCONT');
  }

  /** Graceful stop (a paused node is resumed first so it can see the signal). */
  async stop(node: string): Promise<void> {
    const child = this.procs.get(node);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    await exited;
    this.procs.delete(node);
    // A stale status-port file would name a port the next process does not bind.
    await fsp.rm(path.join(this.stateDir(node), STATUS_PORT_FILE), { force: true });
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.procs.keys()].map((n) => this.stop(n)));
  }

  /** A node's status snapshot, or null while it is not up. */
  async status(node: string): Promise<Status | null> {
    try {
      const port = Number(await fsp.readFile(path.join(this.stateDir(node), STATUS_PORT_FILE), 'utf8'));
      return await fetchStatus(port);
    } catch {
      return null;
    }
  }

  /**
   * These volumes (default: all) have converged: no resync pending, their agent scanned them whole after
   * `sinceMs` and found nothing new, its journal is empty, and their master target applied the last
   * differential and holds a consistent replica.
   */
  async converged(sinceMs: number, volumeIds?: string[]): Promise<boolean> {
    const vols = this.opts.volumes.filter((v) => !volumeIds || volumeIds.includes(v.id));
    const nodes = [...new Set(vols.flatMap((v) => [v.agent, v.masterTarget]))];
    const status = new Map<string, Status[]>();
    for (const n of nodes) {
      const s = await this.status(n);
      if (!s) return false;
      status.set(n, s.volumes as Status[]);
    }
    return vols.every((v) => {
      const a = status.get(v.agent)!.find((x) => x.id === v.id);
      const m = status.get(v.masterTarget)!.find((x) => x.id === v.id);
      return a !== undefined && m !== undefined && a.consistentAfterResync === true && a.lastCycleBytes === 0 && !(Number(a.dirtyBlocks) > 0) && Number(a.lastCycleAt) > sinceMs && a.journalFiles === 0 && m.appliedSeq === a.lastSeq && m.consistent === true;
    });
  }

  async waitConverged(sinceMs: number, timeoutMs: number, volumeIds?: string[], onTick?: () => Promise<void>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await this.converged(sinceMs, volumeIds))) {
      if (Date.now() > deadline) throw new Error(`not converged after ${timeoutMs} ms`);
      await onTick?.();
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
