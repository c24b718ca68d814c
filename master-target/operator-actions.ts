// The master target's operator actions, asked for by `tidemark points|recover|test-failover` over the
// operator socket (common/operator-socket.ts: root only). They run inside the daemon because recovery must
// clone the replica between two differentials, which only the applier can arrange. Every volume named is
// checked against the configuration and every output against the recovery policy (recovery-outputs.ts).
import { didYouMean } from '../common/config.js';
import path from 'node:path';
import { tmError } from '../common/errors.js';
import { checkOutput, outputPolicy, type OutputPolicy } from './recovery-outputs.js';
import type { PointSelector, RecoverOptions } from './recover.js';
import type { MasterTarget } from './server.js';
import { currentPoint } from './volume-state.js';
import type { RecoveryPoint } from './volume-state.js';
import { groupNames, groupPoints, recoverGroup, selectGroupPoint, type GroupSelector } from './group-recovery.js';
import type { RecoverySource } from './recover.js';

/** A point selector from the action's parameters (seq, atMs, tag, latest). */
export function selectorFrom(params: URLSearchParams): PointSelector {
  const num = (k: string): number | undefined => {
    const v = params.get(k);
    if (v === null) return undefined;
    if (!/^\d+$/.test(v)) throw tmError('TM_ERR_USAGE', `${k} must be a whole number, not "${v}"`);
    return Number(v);
  };
  const sel: PointSelector = {};
  const seq = num('seq');
  const atMs = num('atMs');
  if (seq !== undefined) sel.seq = seq;
  if (atMs !== undefined) sel.atMs = atMs;
  if (params.has('tag')) sel.tag = params.get('tag')!;
  if (params.get('latest') === 'true') sel.latest = true;
  return sel;
}

export function recoverOptionsFrom(params: URLSearchParams): RecoverOptions {
  const out = params.get('out');
  if (!out) throw tmError('TM_ERR_USAGE', 'recover needs --out <file or device>');
  const verify = params.get('verify') ?? 'changed';
  if (verify !== 'changed' && verify !== 'full') throw tmError('TM_ERR_USAGE', `--verify is "changed" or "full", not "${verify}"`);
  return { select: selectorFrom(params), out, force: params.get('force') === 'true', copy: params.get('copy') === 'true', verify };
}

/** recoverOptionsFrom, with the output checked against the policy: what the daemon and the offline CLI run. */
export async function checkedRecoverOptions(policy: OutputPolicy, params: URLSearchParams): Promise<RecoverOptions> {
  const opts = recoverOptionsFrom(params);
  await checkOutput(policy, opts.out, { device: params.get('device') === 'true' });
  return opts;
}

/** A configured volume id, or TM_ERR_UNKNOWN_VOLUME: never a path made from what the caller sent. */
export function configuredVolume(ids: readonly string[], params: URLSearchParams): string {
  const volume = params.get('volume') ?? '';
  if (!ids.includes(volume)) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volume.slice(0, 64)}" is not configured on this master target; ${didYouMean(volume, ids)}`, { volume: volume.slice(0, 64) });
  return volume;
}

/** The retained points of every volume that has retention and has been replicated here. */
export function pointsByVolume(ids: readonly string[], sourceOf: (id: string) => RecoverySource): Map<string, RecoveryPoint[]> {
  const out = new Map<string, RecoveryPoint[]>();
  for (const id of ids) {
    try {
      const src = sourceOf(id);
      out.set(id, src.retention.points(src.doneSeq(), src.currentPoint()));
    } catch {
      // no retention, or not replicated yet: not a member of any group point here
    }
  }
  return out;
}

export function groupSelectorFrom(params: URLSearchParams): GroupSelector {
  const sel = selectorFrom(params);
  if (sel.seq !== undefined) throw tmError('TM_ERR_USAGE', 'a group point is named by --latest, --at or --tag, not --seq (each member has its own)');
  return { ...(sel.latest ? { latest: true } : {}), ...(sel.atMs !== undefined ? { atMs: sel.atMs } : {}), ...(sel.tag !== undefined ? { tag: sel.tag } : {}) };
}

/** Group points and group recovery over whatever gives each volume's recovery source (daemon or offline). */
export async function groupAction(action: 'group-points' | 'recover-group', ids: readonly string[], sourceOf: (id: string) => RecoverySource, params: URLSearchParams, policy: OutputPolicy): Promise<unknown> {
  const group = params.get('group') ?? '';
  const all = pointsByVolume(ids, sourceOf);
  const points = groupPoints(all, group);
  if (action === 'group-points') return { group, points, groups: groupNames(all) };
  const outDir = params.get('outDir');
  if (!outDir) throw tmError('TM_ERR_USAGE', 'recover --group needs --out-dir <folder> (one <volume>.img per member)');
  const verify = params.get('verify') === 'full' ? 'full' : 'changed';
  const point = selectGroupPoint(points, groupSelectorFrom(params), group, groupNames(all));
  // Every member's output checked before the first is written.
  for (const m of point.members) await checkOutput(policy, path.join(outDir, `${m.volume}.img`));
  return recoverGroup(sourceOf, point, outDir, { force: params.get('force') === 'true', verify });
}

const VOLUME_ACTIONS = ['points', 'recover', 'test-failover-start', 'test-failover-cleanup', 'current-point'];

export async function operatorAction(mt: MasterTarget, action: string, params: URLSearchParams): Promise<unknown> {
  const volume = VOLUME_ACTIONS.includes(action) ? configuredVolume([...mt.targets.keys()], params) : '';
  const policy = (): OutputPolicy => outputPolicy(mt.config);
  switch (action) {
    case 'points': {
      const src = mt.recoverySource(volume);
      return { volume, doneSeq: src.doneSeq(), points: src.retention.points(src.doneSeq(), src.currentPoint()), retention: src.retention.stats };
    }
    case 'recover':
      return mt.recover(volume, await checkedRecoverOptions(policy(), params));
    case 'test-failover-start': {
      const sel = selectorFrom(params);
      return mt.testFailovers.start(mt.recoverySource(volume), Object.keys(sel).length ? sel : { latest: true }, { loop: params.get('loop') === 'true' });
    }
    case 'test-failover-cleanup':
      return mt.testFailovers.cleanup(volume);
    case 'test-failover-list':
      return mt.testFailovers.list();
    case 'group-points':
    case 'recover-group':
      return groupAction(action, [...mt.targets.keys()], (id) => mt.recoverySource(id), params, policy());
    case 'current-point': {
      const t = mt.targets.get(volume);
      return { volume, doneSeq: t?.store.doneSeq ?? 0, point: currentPoint(t?.store.state ?? null) };
    }
    default:
      throw tmError('TM_ERR_USAGE', `unknown master target action "${action}"`);
  }
}
