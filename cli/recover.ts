// `tidemark points | recover | test-failover <volume> --config master-target.json`: list a volume's
// retained recovery points, materialise one, or expose one for a rehearsal. They ask the running master
// target over its operator socket (it clones the replica between two differentials); with the daemon
// stopped (its state folder's lock free) they take the lock and work on its state directly.
import path from 'node:path';
import { resolveFrom } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { rootLogger } from '../common/log.js';
import { loadMtConfig, type MtConfig } from '../master-target/config.js';
import { checkedRecoverOptions, configuredVolume, groupAction, selectorFrom } from '../master-target/operator-actions.js';
import { outputPolicy } from '../master-target/recovery-outputs.js';
import type { GroupPoint } from '../master-target/group-recovery.js';
import { recoverPoint, type RecoverResult, type RecoverySource } from '../master-target/recover.js';
import { TestFailovers, type Rehearsal } from '../master-target/test-failover.js';
import { parseDuration } from '../master-target/retention/policy.js';
import { MtVolume } from '../master-target/volume.js';
import type { RecoveryPoint } from '../master-target/volume-state.js';
import { ask, onlineOrOffline } from './operator.js';
import { withRecoverProgress } from './recover-progress.js';
import { filterPoints, pointFilter } from './point-filter.js';
import { age } from './status.js';

export interface PointArgs {
  seq?: string;
  at?: string;
  tag?: string;
  latest?: boolean;
  out?: string;
  force?: boolean;
  copy?: boolean;
  verify?: string;
  loop?: boolean;
  json?: boolean;
  group?: string;
  'out-dir'?: string;
  device?: boolean;
  since?: string;
  until?: string;
  limit?: string;
  class?: string;
}

/** "--at": epoch ms, an ISO 8601 time, or an age such as "15m" / "15m ago". */
export function parseTime(text: string, nowMs = Date.now(), flag = '--at'): number {
  let t: number;
  if (/^\d{12,}$/.test(text)) t = Number(text);
  else {
    const age = parseDuration(text.replace(/\s*ago$/, '').replace(/^-/, ''));
    t = age !== null ? nowMs - age : Date.parse(text);
  }
  if (Number.isNaN(t)) throw tmError('TM_ERR_USAGE', `${flag} "${text}" is not a time: give an ISO 8601 time (2026-11-22T18:00:00Z), epoch milliseconds, or an age ("15m ago")`);
  // A point "at or before" a future instant would silently be the latest one: say so instead.
  if (flag === '--at' && t > nowMs + 1000) throw tmError('TM_ERR_USAGE', `--at ${new Date(t).toISOString()} is in the future (now is ${new Date(nowMs).toISOString()}); for the newest point use --latest`);
  return t;
}

function paramsOf(volume: string, a: PointArgs): URLSearchParams {
  const p = new URLSearchParams({ volume });
  if (a.seq !== undefined) p.set('seq', a.seq);
  if (a.at !== undefined) p.set('atMs', String(parseTime(a.at)));
  if (a.tag !== undefined) p.set('tag', a.tag);
  if (a.latest) p.set('latest', 'true');
  if (a.out !== undefined) p.set('out', path.resolve(a.out));
  if (a.device) p.set('device', 'true');
  if (a.force) p.set('force', 'true');
  if (a.copy) p.set('copy', 'true');
  if (a.verify !== undefined) p.set('verify', a.verify);
  if (a.loop) p.set('loop', 'true');
  if (a.group !== undefined) p.set('group', a.group);
  if (a['out-dir'] !== undefined) p.set('outDir', path.resolve(a['out-dir']));
  return p;
}

export function mtStateDir(cfg: MtConfig): string {
  return resolveFrom(cfg.configDir, cfg.stateDir);
}

/** With the master target stopped: the volume's state read straight from its folder. */
async function offlineSource(cfg: MtConfig, volumeId: string): Promise<{ src: RecoverySource; close(): Promise<void> }> {
  const vol = await MtVolume.openOffline(cfg, volumeId, rootLogger('recover'));
  return { src: vol.recoverySource(), close: () => vol.close() };
}

/** A group action: on the daemon, or offline over every configured volume. */
async function actOnGroup(configFile: string, action: 'group-points' | 'recover-group', params: URLSearchParams): Promise<unknown> {
  const cfg = loadMtConfig(configFile);
  return onlineOrOffline(mtStateDir(cfg), `tidemark ${action}`, () => ask(mtStateDir(cfg), action, params, LONG_MS), () => groupOffline(cfg, action, params));
}

async function groupOffline(cfg: MtConfig, action: 'group-points' | 'recover-group', params: URLSearchParams): Promise<unknown> {
  const opened = new Map<string, Awaited<ReturnType<typeof offlineSource>>>();
  try {
    for (const v of cfg.volumes) {
      if (!v.retention) continue;
      const o = await offlineSource(cfg, v.id).catch(() => null);
      if (o) opened.set(v.id, o);
    }
    return await groupAction(action, [...opened.keys()], (id) => {
      const o = opened.get(id);
      if (!o) throw tmError('TM_ERR_POINT_NOT_FOUND', `${id} has no retention here`, { volume: id });
      return o.src;
    }, params, outputPolicy(cfg));
  } finally {
    for (const o of opened.values()) await o.close();
  }
}

export async function groupPointsCommand(configFile: string, group: string, a: PointArgs): Promise<void> {
  const f = pointFilter({ ...a, class: undefined }, (text, flag) => parseTime(text, Date.now(), flag));
  if (a.class !== undefined) throw tmError('TM_ERR_USAGE', '--class does not apply to --group: a group\'s points are its tagged cuts');
  const got = (await actOnGroup(configFile, 'group-points', paramsOf('', { group }))) as { points: GroupPoint[]; groups: string[] };
  const out = { ...got, points: filterPoints(got.points, f) };
  if (a.json) {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  if (out.points.length === 0) {
    console.log(`no complete point of group "${group}" is retained${out.groups.length ? ` (groups seen: ${out.groups.join(', ')})` : ''}`);
    return;
  }
  for (const g of out.points) console.log(`${new Date(g.atMs).toISOString()}  ${g.tag}  ${g.members.map((m) => `${m.volume}#${m.seq}`).join(' ')}`);
}

export async function recoverGroupCommand(configFile: string, group: string, a: PointArgs): Promise<void> {
  const r = (await actOnGroup(configFile, 'recover-group', paramsOf('', { ...a, group }))) as { point: GroupPoint; volumes: RecoverResult[] };
  if (a.json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  console.log(`recovered group ${group} to its cut ${r.point.tag} (${new Date(r.point.atMs).toISOString()}):`);
  for (const v of r.volumes) console.log(`  ${describe(v)}`);
}

/** Long enough for a recovery that copies a large volume. */
export const LONG_MS = 24 * 3_600_000;

/**
 * Run an action on the daemon when it runs (it holds the state folder), else offline with `offline`,
 * holding the state folder so the daemon cannot start under it.
 */
export async function act<T>(configFile: string, action: string, params: URLSearchParams, offline: (src: RecoverySource, cfg: MtConfig) => Promise<T>): Promise<T> {
  const cfg = loadMtConfig(configFile);
  const stateDir = mtStateDir(cfg);
  return onlineOrOffline(stateDir, `tidemark ${action}`, async () => (await ask(stateDir, action, params, LONG_MS)) as T, async () => {
    const { src, close } = await offlineSource(cfg, configuredVolume(cfg.volumes.map((v) => v.id), params));
    try {
      return await offline(src, cfg);
    } finally {
      await close();
    }
  });
}

/** Like act, for actions that need no volume's state offline (test-failover list and cleanup). */
async function actOnState<T>(configFile: string, action: string, params: URLSearchParams, offline: () => Promise<T>): Promise<T> {
  const stateDir = mtStateDir(loadMtConfig(configFile));
  return onlineOrOffline(stateDir, `tidemark ${action}`, async () => (await ask(stateDir, action, params, LONG_MS)) as T, offline);
}

export function formatPoints(points: readonly RecoveryPoint[], nowMs = Date.now()): string {
  const rows = points.map((p) => [`#${p.seq}`, new Date(p.atMs).toISOString(), age(nowMs - p.atMs), p.consistency.toLowerCase(), p.tags.join(',')]);
  const head = ['SEQ', 'CAPTURED (UTC)', 'AGE', 'CLASS', 'TAGS'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export async function points(configFile: string, volume: string, a: PointArgs): Promise<void> {
  const f = pointFilter(a, (text, flag) => parseTime(text, Date.now(), flag));
  const all = await act(configFile, 'points', paramsOf(volume, {}), async (src) => ({ volume, doneSeq: src.doneSeq(), points: src.retention.points(src.doneSeq(), src.currentPoint()), retention: src.retention.stats }));
  const listed = all as { points: RecoveryPoint[] };
  const out = { ...all, points: filterPoints(listed.points, f), retained: listed.points.length };
  if (a.json) {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const o = out as { points: RecoveryPoint[]; retention: { bytes: number; maxBytes: number | null; alert: string | null; paused: string | null } };
  const filtered = a.since !== undefined || a.until !== undefined || a.limit !== undefined || a.class !== undefined;
  console.log(o.points.length ? formatPoints(o.points) : filtered && out.retained > 0 ? `${volume}: no retained point matches` : `${volume}: no recovery point retained yet`);
  const r = o.retention;
  console.log(`\n${filtered ? `${o.points.length} of ${out.retained}` : o.points.length} points; retention log ${(r.bytes / 1048576).toFixed(1)} MiB${r.maxBytes ? ` of ${(r.maxBytes / 1048576).toFixed(0)} MiB` : ''}${r.alert ? `; ALERT: ${r.alert}` : ''}${r.paused ? `; PAUSED: ${r.paused}` : ''}`);
}

function describe(r: RecoverResult): string {
  return `recovered ${r.volume} to point #${r.point.seq} (${r.point.consistency.toLowerCase()}, captured ${new Date(r.point.atMs).toISOString()}${r.point.tags.length ? `, ${r.point.tags.join(',')}` : ''}) into ${r.out}: ${r.method} of the replica at #${r.fromSeq}, ${(r.rolledBackBytes / 1048576).toFixed(1)} MiB rolled back from ${r.segments} segments, verified (${r.verified}) in ${(r.ms.total / 1000).toFixed(2)} s`;
}

export async function recover(configFile: string, volume: string, a: PointArgs): Promise<void> {
  const params = paramsOf(volume, a);
  const r = await withRecoverProgress(mtStateDir(loadMtConfig(configFile)), volume, a.out!, a.json === true, (progress) =>
    act(configFile, 'recover', params, async (src, cfg) => recoverPoint(src, { ...(await checkedRecoverOptions(outputPolicy(cfg), params)), progress })));
  console.log(a.json ? JSON.stringify(r, null, 2) : describe(r));
}

export async function testFailover(configFile: string, sub: string | undefined, volume: string | undefined, a: PointArgs): Promise<void> {
  const cfg = loadMtConfig(configFile);
  const dir = path.join(resolveFrom(cfg.configDir, cfg.stateDir), 'test-failover');
  if (sub === 'list') {
    const list = await actOnState(configFile, 'test-failover-list', new URLSearchParams(), () => new TestFailovers(dir).list());
    if (a.json) console.log(JSON.stringify({ rehearsals: list }, null, 2));
    else console.log(list.length ? list.map((r) => `${r.volume}: point #${r.recovered.point.seq} at ${r.device ?? r.image} since ${new Date(r.startedAt).toISOString()}`).join('\n') : 'no test failover running');
    return;
  }
  if (!volume || (sub !== 'start' && sub !== 'cleanup')) throw tmError('TM_ERR_USAGE', 'usage: tidemark test-failover start|cleanup|list <volume> --config <master-target.json>');
  if (sub === 'cleanup') {
    const params = paramsOf(volume, {});
    const r = await actOnState(configFile, 'test-failover-cleanup', params, () => new TestFailovers(dir).cleanup(configuredVolume(cfg.volumes.map((v) => v.id), params)));
    if (a.json) console.log(JSON.stringify(r, null, 2));
    else console.log(`test failover of ${volume} cleaned up: ${r.device ? `${r.device} detached, ` : ''}${r.image} deleted; replication was never interrupted`);
    return;
  }
  const params = paramsOf(volume, a);
  const r = await act<Rehearsal>(configFile, 'test-failover-start', params, (src) => {
    const sel = selectorFrom(params);
    return new TestFailovers(dir).start(src, Object.keys(sel).length ? sel : { latest: true }, { loop: a.loop });
  });
  console.log(a.json ? JSON.stringify(r, null, 2) : `test failover of ${volume}: point #${r.recovered.point.seq} is writable at ${r.device ?? r.image}; replication and retention go on. Clean up with: tidemark test-failover cleanup ${volume} --config ${configFile}`);
}
