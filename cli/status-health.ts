// A volume's health across the chain, each non-ok state with its cause, from the daemons' status
// snapshots (GET /status) and the configs of daemons that did not answer. What `tidemark status` prints
// in its HEALTH column, lists under "volumes" in --json, and turns into its exit status.

export type Snap = Record<string, unknown>;

export const num = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
export const obj = (x: unknown): Snap | null => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Snap) : null);
export const vols = (s: Snap): Snap[] => (Array.isArray(s.volumes) ? (s.volumes as unknown[]).map(obj).filter((v): v is Snap => v !== null) : []);

/** Seconds under 2 min, minutes under 2 h, else hours. */
export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** A daemon whose config was given but which did not answer: the volumes its config lists. */
export interface Unreachable {
  /** 'daemon' when its config could not be read. */
  role: 'agent' | 'process-server' | 'master-target' | 'daemon';
  name: string;
  volumes: string[];
  error: string;
}

/** One non-ok state of a volume: a short word for the column, and why. */
export interface Problem {
  state: string;
  cause: string;
}

export interface VolumeHealth {
  volume: string;
  ok: boolean;
  /** The states, comma-separated ("ok" when there is none): stable words scripts may match. */
  health: string;
  problems: Problem[];
}

const ROLE_SHORT = { agent: 'AGENT', 'process-server': 'PS', 'master-target': 'MT', daemon: 'DAEMON' } as const;

/** The daemons' snapshots by role, and every volume id any of them (or an unreachable one's config) has. */
export function chain(snapshots: Snap[], unreachable: Unreachable[] = []): { agents: Snap[]; pss: Snap[]; mts: Snap[]; ids: string[]; find: (list: Snap[], id: string) => { d: Snap; v: Snap } | undefined } {
  const byRole = (role: string): Snap[] => snapshots.filter((s) => s.role === role);
  const agents = byRole('agent');
  const pss = byRole('process-server');
  const mts = byRole('master-target');
  const find = (list: Snap[], id: string): { d: Snap; v: Snap } | undefined => {
    for (const d of list) for (const v of vols(d)) if (v.id === id) return { d, v };
    return undefined;
  };
  const ids = [...new Set([...[...agents, ...pss, ...mts].flatMap((s) => vols(s).map((v) => String(v.id))), ...unreachable.flatMap((u) => u.volumes)])];
  return { agents, pss, mts, ids, find };
}

function refusal(id: string, sender: Snap | null, now: number): Problem | null {
  const r = obj(obj(sender?.refusals)?.[id]);
  if (!r) return null;
  const retry = num(r.retryAt);
  const times = num(r.count) ?? 1;
  const when = retry !== null ? `; next try in ${age(retry - now)}${times > 1 ? `, refused ${times} times in a row` : ''}` : '';
  return { state: `REFUSED by ${String(sender?.peer || 'the next hop')}`, cause: `${String(r.message ?? r.code)}${when}` };
}

/** Every non-ok state of volume `id`, with its cause. */
export function problemsOf(id: string, snapshots: Snap[], unreachable: Unreachable[] = [], now = Date.now()): Problem[] {
  const { agents, pss, mts, find } = chain(snapshots, unreachable);
  const a = find(agents, id);
  const p = find(pss, id);
  const m = find(mts, id);
  const out: Problem[] = [];
  for (const u of unreachable) {
    if (u.volumes.includes(id)) out.push({ state: `${ROLE_SHORT[u.role]} UNREACHABLE`, cause: `${u.role === 'daemon' ? '' : `${u.role} `}${u.name}: ${u.error}` });
  }
  const mv = m?.v;
  const rt = obj(mv?.retention);
  if (mv?.consistent === false) out.push({ state: 'INCONSISTENT', cause: `the replica on ${String(m!.d.name)} is not a usable image until the resync ends` });
  if (rt?.paused) out.push({ state: 'APPLY PAUSED', cause: String(rt.paused) });
  else if (mv && mv.lastError && (num(mv.storedSeq) ?? 0) > (num(mv.appliedSeq) ?? 0)) out.push({ state: 'APPLY FAILING', cause: String(mv.lastError) });
  if (m) {
    // The master target's filesystems this volume uses: its state (every volume's) and its own replica's, snapshots'.
    const fss = Array.isArray(obj(m.d.space)?.filesystems) ? (obj(m.d.space)!.filesystems as unknown[]).map(obj).filter((f): f is Snap => f !== null) : [];
    const mine = fss.filter((f) => Array.isArray(f.holds) && (f.holds as unknown[]).some((h) => String(h).startsWith('state') || String(h).endsWith(` of ${id}`)));
    const worst = mine.find((f) => f.health === 'critical') ?? mine.find((f) => f.health === 'warning');
    if (worst) out.push({ state: `MT DISK ${String(worst.health).toUpperCase()}`, cause: `${String(m.d.name)}: ${mine.filter((f) => f.health !== 'ok').map((f) => `${String(f.path)} ${String(f.freePercent)}% free (${(f.holds as unknown[]).join(', ')})`).join('; ')}` });
  }
  const av = a?.v;
  const r = obj(av?.resync);
  if (r?.active) out.push({ state: `${String(r.mode)} ${String(r.percent)}%`, cause: String(r.reason ?? '') });
  else if (av?.consistentAfterResync === false) out.push({ state: 'resync finishing', cause: 'writes made during the resync are being sent (step II)' });
  const owed = p?.v.resyncNeeded;
  if (typeof owed === 'string' && owed && !r?.active) out.push({ state: 'RESYNC NEEDED', cause: `${String(p!.d.name)}: ${owed}` });
  if (av?.mode === 'bitmap') out.push({ state: 'BITMAP', cause: String(av.modeReason ?? '') });
  const drained = obj(av?.drained);
  if (drained) out.push({ state: 'DRAINED', cause: `final point #${String(drained.seq)} taken ${age(now - Number(drained.drainedAt ?? now))} ago; unprotected until \`tidemark resume\`` });
  if (a) {
    const up = obj(a.d.uploader);
    if (up?.connected !== true) out.push({ state: 'DISCONNECTED', cause: `agent ${String(a.d.name)} to the process server: ${String(up?.lastError ?? 'connecting')}` });
    else if (up.backpressure) out.push({ state: 'BACKPRESSURE', cause: String(up.backpressureReason || 'the process server holds new differentials back') });
    const rf = refusal(id, up, now);
    if (rf) out.push(rf);
  }
  if (p) {
    const fwds = obj(p.d.forwarders) ?? {};
    const mtName = typeof p.v.masterTarget === 'string' ? p.v.masterTarget : Object.keys(fwds).length === 1 ? Object.keys(fwds)[0]! : null;
    const fwd = mtName ? obj(fwds[mtName]) : null;
    if (fwd && fwd.connected !== true) out.push({ state: 'PS-MT DISCONNECTED', cause: `${String(p.d.name)} to ${mtName}: ${String(fwd.lastError ?? 'connecting')}` });
    const rf = refusal(id, fwd, now);
    if (rf) out.push(rf);
    const c = obj(p.d.cache);
    const reasons = Array.isArray(c?.reasons) ? (c!.reasons as unknown[]).map(String) : [];
    if (c && typeof c.health === 'string' && c.health !== 'ok') out.push({ state: `PS CACHE ${c.health.toUpperCase()}`, cause: reasons.join('; ') || `${String(p.d.name)}'s cache` });
  }
  if (pss.length && !p) out.push({ state: 'not at ps', cause: `no process server given lists ${id}` });
  if (mts.length && !m) out.push({ state: 'not at mt', cause: `no master target given lists ${id}` });
  return out;
}

/** Each volume's health across the chain; "ok" means protected and well. */
export function volumeHealth(snapshots: Snap[], unreachable: Unreachable[] = [], now = Date.now()): VolumeHealth[] {
  return chain(snapshots, unreachable).ids.map((id) => {
    const problems = problemsOf(id, snapshots, unreachable, now);
    return { volume: id, ok: problems.length === 0, health: problems.length ? problems.map((x) => x.state).join(', ') : 'ok', problems };
  });
}

/** The HEALTH cell: "ok", or each state with its cause. */
export function healthText(problems: Problem[]): string {
  return problems.length ? problems.map((x) => (x.cause ? `${x.state}: ${x.cause}` : x.state)).join('; ') : 'ok';
}
