// `tidemark status --config <file> ...`: each daemon's status snapshot, found through the status-port file
// in the state folder its config names, printed as a table (or --json), with an exit status that says
// whether all is well, as `systemctl is-active` does (docs/OPERATIONS.md, "tidemark status").
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { resolveFrom } from '../common/config.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { fetchStatus, formatStatus, volumeHealth } from './status.js';

/** Exit statuses of `tidemark status`. */
export const STATUS_EXIT = { ok: 0, volumeNotOk: 3, daemonUnreachable: 4 } as const;

export interface DaemonResult {
  config: string;
  reachable: boolean;
  error: string | null;
  status: Record<string, unknown> | null;
}

export async function gatherStatus(configs: string[]): Promise<DaemonResult[]> {
  const out: DaemonResult[] = [];
  for (const file of configs) {
    try {
      const raw = JSON.parse(readFileSync(file, 'utf8')) as { stateDir?: string; cacheDir?: string };
      const dir = resolveFrom(path.dirname(path.resolve(file)), raw.stateDir ?? raw.cacheDir ?? '.');
      const port = Number(readFileSync(path.join(dir, STATUS_PORT_FILE), 'utf8'));
      out.push({ config: file, reachable: true, error: null, status: await fetchStatus(port) });
    } catch (e) {
      out.push({ config: file, reachable: false, error: (e as Error).message, status: null });
    }
  }
  return out;
}

/** The JSON document of `status --json` (schema: docs/OPERATIONS.md) and the exit status it implies. */
export function statusReport(daemons: DaemonResult[], nowMs = Date.now()): { report: Record<string, unknown>; exit: number } {
  const snaps = daemons.flatMap((d) => (d.status ? [d.status] : []));
  const volumes = volumeHealth(snaps);
  const exit = daemons.some((d) => !d.reachable) ? STATUS_EXIT.daemonUnreachable : volumes.some((v) => !v.ok) ? STATUS_EXIT.volumeNotOk : STATUS_EXIT.ok;
  return { report: { schema: 1, at: nowMs, ok: exit === 0, exit, daemons, volumes }, exit };
}

export async function statusCommand(configs: string[], o: { json: boolean }): Promise<void> {
  const daemons = await gatherStatus(configs);
  const { report, exit } = statusReport(daemons);
  if (o.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    for (const d of daemons) if (!d.reachable) console.error(`${d.config}: daemon not reachable (${d.error})`);
    console.log(formatStatus(daemons.flatMap((d) => (d.status ? [d.status] : []))));
  }
  process.exitCode = exit;
}
