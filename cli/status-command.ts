// `tidemark status --config <file> ...`: each daemon's status snapshot, found through the status-port file
// in the state folder its config names, printed as a table fitted to the terminal (or --json), with an
// exit status that says whether all is well, as `systemctl is-active` does (docs/OPERATIONS.md,
// "tidemark status"). --watch redraws it every few seconds until interrupted.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { resolveFrom } from '../common/config.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { fetchStatus, formatStatus } from './status.js';
import { volumeHealth, type Unreachable } from './status-health.js';

/** Exit statuses of `tidemark status`. */
export const STATUS_EXIT = { ok: 0, volumeNotOk: 3, daemonUnreachable: 4 } as const;

export interface DaemonResult {
  config: string;
  reachable: boolean;
  error: string | null;
  status: Record<string, unknown> | null;
  /** From the config, for a daemon that did not answer (null when the config itself could not be read). */
  role?: Unreachable['role'] | null;
  name?: string | null;
}

interface RawConfig { name?: unknown; stateDir?: string; cacheDir?: string; processServer?: unknown; volumes?: Array<{ id?: unknown }> }

/** Which daemon a config describes, by the keys only its schema has. */
function roleOf(raw: RawConfig): Unreachable['role'] {
  return raw.processServer !== undefined ? 'agent' : raw.cacheDir !== undefined ? 'process-server' : 'master-target';
}

export async function gatherStatus(configs: string[]): Promise<DaemonResult[]> {
  const out: DaemonResult[] = [];
  for (const file of configs) {
    let raw: RawConfig | null = null;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8')) as RawConfig;
      const dir = resolveFrom(path.dirname(path.resolve(file)), raw.stateDir ?? raw.cacheDir ?? '.');
      let port: number;
      try {
        port = Number(readFileSync(path.join(dir, STATUS_PORT_FILE), 'utf8'));
      } catch {
        throw new Error(`not running (no ${path.join(dir, STATUS_PORT_FILE)})`);
      }
      out.push({ config: file, reachable: true, error: null, status: await fetchStatus(port) });
    } catch (e) {
      out.push({ config: file, reachable: false, error: (e as Error).message, status: null, role: raw ? roleOf(raw) : null, name: typeof raw?.name === 'string' ? raw.name : null });
    }
  }
  return out;
}

/** The daemons that did not answer, with the volumes their configs list. */
export function unreachableOf(daemons: DaemonResult[]): Unreachable[] {
  return daemons.filter((d) => !d.reachable).map((d) => {
    let ids: string[] = [];
    try {
      const raw = JSON.parse(readFileSync(d.config, 'utf8')) as RawConfig;
      ids = (raw.volumes ?? []).map((v) => String(v.id));
    } catch {
      /* a config that cannot be read lists no volume; the daemon line says why */
    }
    return { role: d.role ?? 'daemon', name: d.name ?? d.config, volumes: ids, error: d.error ?? 'not reachable' };
  });
}

/** The JSON document of `status --json` (schema: docs/OPERATIONS.md) and the exit status it implies. */
export function statusReport(daemons: DaemonResult[], nowMs = Date.now()): { report: Record<string, unknown>; exit: number } {
  const snaps = daemons.flatMap((d) => (d.status ? [d.status] : []));
  const volumes = volumeHealth(snaps, unreachableOf(daemons), nowMs);
  const exit = daemons.some((d) => !d.reachable) ? STATUS_EXIT.daemonUnreachable : volumes.some((v) => !v.ok) ? STATUS_EXIT.volumeNotOk : STATUS_EXIT.ok;
  return { report: { schema: 1, at: nowMs, ok: exit === 0, exit, daemons, volumes }, exit };
}

/** One look: the table (or the JSON document) and its exit status. */
async function once(configs: string[], json: boolean): Promise<{ text: string; exit: number }> {
  const daemons = await gatherStatus(configs);
  const { report, exit } = statusReport(daemons);
  if (json) return { text: JSON.stringify(report, null, 2), exit };
  return { text: formatStatus(daemons.flatMap((d) => (d.status ? [d.status] : [])), Date.now(), { unreachable: unreachableOf(daemons) }), exit };
}

export async function statusCommand(configs: string[], o: { json: boolean; watchSeconds?: number }): Promise<void> {
  if (o.watchSeconds === undefined) {
    const { text, exit } = await once(configs, o.json);
    console.log(text);
    process.exitCode = exit;
    return;
  }
  // --watch: redrawn in place on a terminal (clear screen, as watch(1) does), appended otherwise; with
  // --json one document per line. Ends on SIGINT/SIGTERM with the last look's exit status.
  const tty = process.stdout.isTTY === true && !o.json;
  let stop = false;
  let wake: (() => void) | null = null;
  const end = (): void => {
    stop = true;
    wake?.();
  };
  process.once('SIGINT', end);
  process.once('SIGTERM', end);
  let exit = 0;
  while (!stop) {
    const look = await once(configs, o.json);
    exit = look.exit;
    const text = o.json ? JSON.stringify(JSON.parse(look.text)) : look.text;
    if (tty) process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}  every ${o.watchSeconds}s (Ctrl-C ends)\n\n${text}\n`);
    else process.stdout.write(`${o.json ? '' : `--- ${new Date().toISOString()}\n`}${text}\n`);
    await new Promise<void>((r) => {
      const t = setTimeout(r, o.watchSeconds! * 1000);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }
  process.removeListener('SIGINT', end);
  process.removeListener('SIGTERM', end);
  process.exitCode = exit;
}
