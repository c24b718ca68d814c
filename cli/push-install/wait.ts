// "Installed" means connected: after starting the agent, push-install waits until both ends say so.
// The agent's own status (fetched over SSH) must come from the process we just started and show a
// session with this process server; this process server's status must list the agent among the peers
// it accepted. On a timeout or an agent that exits, the error carries the agent's log tail.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { STATUS_PORT_FILE } from '../../common/status-server.js';
import { fetchStatus } from '../status.js';
import type { InstallRecord, Layout } from './layout.js';
import { agentStateScript, logTailScript } from './service.js';
import { pushError, type Ssh } from './ssh.js';

export interface WaitTarget {
  /** Folder holding this process server's status-port file (its cacheDir). */
  psStatusDir: string;
  psName: string;
  timeoutMs: number;
  /** The pid of the agent this replaces (upgrade): a status from it does not count. */
  previousPid?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function logTail(ssh: Ssh, L: Layout, rec: Pick<InstallRecord, 'mode'>): Promise<string> {
  try {
    const r = await ssh.run(logTailScript(L, rec), { step: 'log tail', timeoutMs: 20_000 });
    return r.stdout.trim() || '(empty)';
  } catch (e) {
    return `(could not read it: ${(e as Error).message})`;
  }
}

interface AgentSide { pid: number; alive: boolean; connected: boolean; peer: string; lastError: string | null; statusError: string }

async function agentSide(ssh: Ssh, L: Layout, rec: InstallRecord): Promise<AgentSide> {
  const out = await ssh.check(agentStateScript(L, rec), { step: 'wait for the agent', timeoutMs: 20_000 });
  const line = (k: string): string => out.split('\n').find((l) => l.startsWith(`${k}=`))?.slice(k.length + 1) ?? '';
  const side: AgentSide = { pid: Number(line('pid')) || 0, alive: line('alive') === 'yes', connected: false, peer: '', lastError: null, statusError: line('statusError') };
  const json = line('status');
  if (json) {
    try {
      const s = JSON.parse(json) as { pid?: number; uploader?: { connected?: boolean; peer?: string; lastError?: string | null } };
      // A status-port file left by the agent this one replaced answers for nobody: only trust our pid.
      if (s.pid === side.pid) {
        side.connected = s.uploader?.connected === true;
        side.peer = s.uploader?.peer ?? '';
        side.lastError = s.uploader?.lastError ?? null;
      } else {
        side.statusError = `status answered by pid ${String(s.pid)}, not the agent (${side.pid})`;
      }
    } catch (e) {
      side.statusError = `unreadable status: ${(e as Error).message}`;
    }
  }
  return side;
}

async function psSide(t: WaitTarget, agent: string): Promise<{ listed: boolean; error: string }> {
  try {
    const port = Number(await fsp.readFile(path.join(t.psStatusDir, STATUS_PORT_FILE), 'utf8'));
    const s = await fetchStatus(port);
    const agents = s.agents as string[] | undefined;
    return { listed: Array.isArray(agents) && agents.includes(agent), error: '' };
  } catch (e) {
    return { listed: false, error: `process server status not reachable (${(e as Error).message}); is it running?` };
  }
}

/** Resolves with the agent's pid once it is connected; throws TM_ERR_PUSH_INSTALL with its log tail otherwise. */
export async function waitConnected(ssh: Ssh, L: Layout, rec: InstallRecord, t: WaitTarget): Promise<number> {
  const deadline = Date.now() + t.timeoutMs;
  let last = { a: null as AgentSide | null, ps: { listed: false, error: '' } };
  for (;;) {
    const a = await agentSide(ssh, L, rec);
    const ps = await psSide(t, rec.name);
    last = { a, ps };
    const fresh = a.pid > 0 && a.pid !== t.previousPid;
    if (fresh && a.alive && a.connected && a.peer === t.psName && ps.listed) return a.pid;
    // A directly started agent that exited stays down: say so now instead of at the timeout.
    if (rec.mode === 'direct' && a.pid > 0 && !a.alive) {
      throw pushError('wait for the agent', ssh.target.host, `the agent (pid ${a.pid}) exited. Last lines of ${L.log}:\n${await logTail(ssh, L, rec)}`);
    }
    if (Date.now() > deadline) break;
    await sleep(1000);
  }
  const a = last.a;
  const why = [
    !a || a.pid === 0 ? 'the agent has no process' : !a.alive ? `the agent (pid ${a.pid}) is not running` : '',
    a && a.alive && !a.connected ? `the agent is not connected${a.lastError ? ` (last error: ${a.lastError})` : ''}${a.statusError ? ` (${a.statusError})` : ''}` : '',
    a && a.connected && a.peer !== t.psName ? `the agent is connected to "${a.peer}", not to "${t.psName}"` : '',
    last.ps.error || (!last.ps.listed ? `process server ${t.psName} does not list agent ${rec.name} among its connected agents` : ''),
  ].filter((s) => s !== '').join('; ');
  const where = rec.mode === 'systemd' ? 'journalctl -u tidemark-agent' : L.log;
  throw pushError('wait for the agent', ssh.target.host,
    `not connected after ${Math.round(t.timeoutMs / 1000)} s: ${why}. Last lines of ${where}:\n${await logTail(ssh, L, rec)}`);
}
