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
  const withSnap = states.filter((s) => s.snapshot !== null);
  const snaps = withSnap.map((s) => s.snapshot!);
  const health = new Map(volumeHealth(snaps).map((h) => [h.volume, h]));
  const find = (role: string, id: string): { d: DaemonState; v: Snap } | undefined => {
    for (const d of withSnap) if (roles.get(d.name) === role) for (const v of vols(d.snapshot)) if (v.id === id) return { d, v };
    return undefined;
  };
  const ids = [...new Set(withSnap.flatMap((s) => vols(s.snapshot).map((v) => String(v.id))))].sort();
  return ids.map((id) => {
    const a = find('agent', id);
    const p = find('process-server', id);
    const m = find('master-target', id);
    const crash = pointOf(m?.v.lastCrashPoint, 'CRASH_CONSISTENT');
    const app = pointOf(m?.v.lastAppPoint, 'APP_CONSISTENT');
    const newest = Math.max(crash?.atMs ?? -Infinity, app?.atMs ?? -Infinity);
    const down = [a, p, m].filter((x): x is { d: DaemonState; v: Snap } => x !== undefined && !x.d.up).map((x) => `${roles.get(x.d.name)} ${x.d.name} DOWN: ${x.d.cause ?? 'no answer'}`);
    const h = health.get(id);
    const words = [...down, ...(h && !h.ok ? [h.health] : [])];
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
