// The fleet as the website shows it: one row per protected volume across the chain (agent -> process
// server -> master target), built from each daemon's last /status answer, with the cause of anything not ok.
import { volumeHealth } from '../cli/status.js';
import type { DaemonState } from './store.js';

type Snap = Record<string, unknown>;
const num = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const obj = (x: unknown): Snap | null => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Snap) : null);
const vols = (s: Snap | null): Snap[] => (s && Array.isArray(s.volumes) ? (s.volumes as unknown[]).map(obj).filter((v): v is Snap => v !== null) : []);

export interface PointRef { seq: number; atMs: number; tags: string[]; consistency: string }

export interface VolumeRow {
  id: string;
  agent: string | null;
  processServer: string | null;
  masterTarget: string | null;
  mode: string;
  /** Age of the newest recovery point the master target holds (crash- or app-consistent). */
  rpoMs: number | null;
  agentBacklog: number | null;
  psBacklog: number | null;
  mtBacklog: number | null;
  lastSeq: number | null;
  appliedSeq: number | null;
  appliedBytes: number | null;
  lastCrashPoint: PointRef | null;
  lastAppPoint: PointRef | null;
  resyncPercent: number | null;
  health: string;
  ok: boolean;
}

export interface DaemonRow { name: string; role: string; up: boolean; cause: string | null; sinceMs: number; lastOkMs: number | null }

function pointOf(p: unknown, consistency: string): PointRef | null {
  const v = obj(p);
  const at = num(v?.atMs);
  const seq = num(v?.seq);
  if (!v || at === null || seq === null) return null;
  return { seq, atMs: at, tags: Array.isArray(v.tags) ? (v.tags as unknown[]).map(String) : [], consistency: typeof v.consistency === 'string' ? v.consistency : consistency };
}

/** Each volume's row. `roles` names each daemon's configured role (its snapshot may be missing while it is down). */
export function fleetRows(states: readonly DaemonState[], roles: ReadonlyMap<string, string>, nowMs: number): VolumeRow[] {
  // One index of (role, volume) -> where it is, so a fleet of thousands of volumes is one pass.
  const at = new Map<string, { d: DaemonState; v: Snap }>();
  const ids = new Set<string>();
  const present = new Set<string>();
  for (const d of states) {
    const role = roles.get(d.name);
    if (d.snapshot === null || role === undefined) continue;
    present.add(role);
    for (const v of vols(d.snapshot)) {
      const id = String(v.id);
      ids.add(id);
      if (!at.has(`${role}\0${id}`)) at.set(`${role}\0${id}`, { d, v });
    }
  }
  return [...ids].sort().map((id) => {
    const a = at.get(`agent\0${id}`);
    const p = at.get(`process-server\0${id}`);
    const m = at.get(`master-target\0${id}`);
    // The HEALTH words of `tidemark status`, from this volume's slice of each daemon's snapshot.
    const slice = [a, p, m].filter((x): x is { d: DaemonState; v: Snap } => x !== undefined).map((x) => ({ ...x.d.snapshot!, volumes: [x.v] }));
    const h = volumeHealth(slice)[0];
    const crash = pointOf(m?.v.lastCrashPoint, 'CRASH_CONSISTENT');
    const app = pointOf(m?.v.lastAppPoint, 'APP_CONSISTENT');
    const newest = Math.max(crash?.atMs ?? -Infinity, app?.atMs ?? -Infinity);
    const down = [a, p, m].filter((x): x is { d: DaemonState; v: Snap } => x !== undefined && !x.d.up).map((x) => `${roles.get(x.d.name)} ${x.d.name} DOWN: ${x.d.cause ?? 'no answer'}`);
    // As `tidemark status` says when a hop that exists does not know the volume.
    const missing = [...(present.has('process-server') && !p ? ['not at ps'] : []), ...(present.has('master-target') && !m ? ['not at mt'] : [])];
    const words = [...down, ...(h && !h.ok ? [h.health] : []), ...missing];
    const r = obj(a?.v.resync);
    return {
      id,
      agent: a?.d.name ?? null,
      processServer: p?.d.name ?? null,
      masterTarget: m?.d.name ?? null,
      mode: a ? String(a.v.mode ?? '?') : '-',
      rpoMs: Number.isFinite(newest) ? Math.max(0, nowMs - newest) : null,
      agentBacklog: num(a?.v.journalBytes),
      psBacklog: num(p?.v.backlogBytes),
      mtBacklog: num(m?.v.backlogBytes),
      lastSeq: num(a?.v.lastSeq),
      appliedSeq: num(m?.v.appliedSeq),
      appliedBytes: num(m?.v.appliedBytes),
      lastCrashPoint: crash,
      lastAppPoint: app,
      resyncPercent: r?.active ? num(r.percent) : null,
      health: words.length ? words.join('; ') : 'ok',
      ok: words.length === 0,
    };
  });
}

/** One protected machine (agent) at a glance: its volumes' worst figures. */
export interface MachineRow {
  name: string;
  volumes: number;
  notOk: number;
  /** The oldest RPO among its volumes (null: none known). */
  worstRpoMs: number | null;
  /** Bytes not yet applied at the master target, summed over its volumes and hops. */
  backlog: number;
}

/** Volumes grouped by the machine that protects them, machines with trouble first, then by name. */
export function machineGroups(rows: readonly VolumeRow[]): Array<{ machine: MachineRow; volumes: VolumeRow[] }> {
  const by = new Map<string, VolumeRow[]>();
  for (const r of rows) {
    const k = r.agent ?? '(no agent)';
    const list = by.get(k);
    if (list) list.push(r);
    else by.set(k, [r]);
  }
  const out = [...by].map(([name, volumes]) => {
    let notOk = 0;
    let worst: number | null = null;
    let backlog = 0;
    for (const v of volumes) {
      if (!v.ok) notOk++;
      if (v.rpoMs !== null && (worst === null || v.rpoMs > worst)) worst = v.rpoMs;
      backlog += (v.agentBacklog ?? 0) + (v.psBacklog ?? 0) + (v.mtBacklog ?? 0);
    }
    return { machine: { name, volumes: volumes.length, notOk, worstRpoMs: worst, backlog }, volumes };
  });
  return out.sort((a, b) => (b.machine.notOk > 0 ? 1 : 0) - (a.machine.notOk > 0 ? 1 : 0) || (a.machine.name < b.machine.name ? -1 : a.machine.name > b.machine.name ? 1 : 0));
}
