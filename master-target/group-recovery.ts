// Consistency groups on the master target: the volumes of one agent cut at one instant carry the same
// tag `cg:<group>:<instant>:<members>` (proto/group-tag.ts) on the point of that cut. A group point is one
// whose tag is on a retained point of as many volumes as it names; recovering it recovers every member to
// its point of that cut, so the set is consistent across volumes.
import path from 'node:path';
import { ensureDir } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import { didYouMean } from '../common/config.js';
import { parseGroupTag } from '../proto/group-tag.js';
import type { RecoveryPoint } from './volume-state.js';
import { recoverPoint, type RecoverResult, type RecoverySource } from './recover.js';

export interface GroupPoint {
  group: string;
  tag: string;
  atMs: number;
  members: Array<{ volume: string; seq: number }>;
}

/** The complete group points of `group` across these volumes' retained points, oldest first. */
export function groupPoints(pointsByVolume: ReadonlyMap<string, readonly RecoveryPoint[]>, group: string): GroupPoint[] {
  const byTag = new Map<string, GroupPoint & { expected: number }>();
  for (const [volume, points] of pointsByVolume) {
    for (const p of points) {
      for (const tag of p.tags) {
        const g = parseGroupTag(tag);
        if (!g || g.group !== group) continue;
        const gp = byTag.get(tag) ?? { group, tag, atMs: g.atMs, members: [], expected: g.members };
        gp.members.push({ volume, seq: p.seq });
        byTag.set(tag, gp);
      }
    }
  }
  return [...byTag.values()]
    .filter((g) => g.members.length === g.expected)
    .sort((a, b) => a.atMs - b.atMs)
    .map(({ expected: _, ...g }) => ({ ...g, members: g.members.sort((a, b) => a.volume.localeCompare(b.volume)) }));
}

/** Every group named by a tag on these points. */
export function groupNames(pointsByVolume: ReadonlyMap<string, readonly RecoveryPoint[]>): string[] {
  const names = new Set<string>();
  for (const points of pointsByVolume.values()) for (const p of points) for (const t of p.tags) {
    const g = parseGroupTag(t);
    if (g) names.add(g.group);
  }
  return [...names].sort();
}

export interface GroupSelector {
  latest?: boolean;
  /** The newest group point cut at or before this instant. */
  atMs?: number;
  /** The cut's own tag, `cg:<group>:<instant>:<members>`. */
  tag?: string;
}

export function selectGroupPoint(points: readonly GroupPoint[], sel: GroupSelector, group: string, known: readonly string[]): GroupPoint {
  if (points.length === 0) {
    throw tmError('TM_ERR_POINT_NOT_FOUND', `no complete point of group "${group}" is retained${known.includes(group) ? ' (some members lack it: fuzzy, resyncing or purged)' : `; ${didYouMean(group, known)}`}`);
  }
  const given = [sel.latest === true, sel.atMs !== undefined, sel.tag !== undefined].filter(Boolean).length;
  if (given !== 1) throw tmError('TM_ERR_USAGE', 'name one group point: --latest, --at <time> or --tag cg:<group>:<instant>:<members>');
  const found = sel.latest ? points.at(-1) : sel.tag !== undefined ? points.find((p) => p.tag === sel.tag) : points.filter((p) => p.atMs <= sel.atMs!).at(-1);
  if (!found) {
    throw tmError('TM_ERR_POINT_NOT_FOUND', `no complete point of group "${group}" matches; retained: ${points.length} from ${new Date(points[0]!.atMs).toISOString()} to ${new Date(points.at(-1)!.atMs).toISOString()}`);
  }
  return found;
}

/** Recover every member of a group point into `<outDir>/<volume>.img`. */
export async function recoverGroup(sourceOf: (volume: string) => RecoverySource, point: GroupPoint, outDir: string, opts: { force?: boolean; verify?: 'changed' | 'full' } = {}): Promise<{ point: GroupPoint; volumes: RecoverResult[] }> {
  await ensureDir(outDir);
  const volumes: RecoverResult[] = [];
  for (const m of point.members) {
    volumes.push(await recoverPoint(sourceOf(m.volume), { select: { seq: m.seq }, out: path.join(outDir, `${m.volume}.img`), force: opts.force, verify: opts.verify }));
  }
  return { point, volumes };
}
