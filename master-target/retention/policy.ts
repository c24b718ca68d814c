// Which recovery points a volume keeps: a pure function of the points, the time and the policy, so it is
// tested on its own and every maintenance pass decides the same way from the same inputs.
//
// - the newest point is always kept;
// - a point carrying a pinned tag is kept whatever its age (a bookmark);
// - an app-consistent point is kept, unthinned, for `appWindow`;
// - any other point older than `window` is dropped;
// - the rest are thinned by tiers: past a tier's `after` age, only the oldest point of each `every`-long
//   bucket (aligned to the epoch, so a kept point stays kept as time passes) survives.
import type { RecoveryPoint } from '../volume-state.js';

export interface ThinningTier {
  afterMs: number;
  everyMs: number;
}

export interface RetentionPolicy {
  windowMs: number;
  appWindowMs: number;
  tiers: ThinningTier[];
  pinTags: string[];
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "30s", "15m", "72h", "30d" -> milliseconds; null when it is not a duration. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]!]! : null;
}

function pinned(p: RecoveryPoint, pinTags: readonly string[]): boolean {
  return p.tags.some((t) => pinTags.includes(t));
}

/**
 * When a point counts as made, for ageing: the master target's own apply time. The source's capture time
 * follows the source's clock, and a clock stepped forward would age (and thin, and compact away) points
 * irreversibly; 0 (segments written before appliedAt was kept) falls back to it.
 */
const madeAt = (p: RecoveryPoint): number => p.appliedAt || p.atMs;

/** The sequence numbers of the points to keep. `points` may be in any order. */
export function pointsToKeep(points: readonly RecoveryPoint[], nowMs: number, policy: RetentionPolicy): Set<number> {
  const keep = new Set<number>();
  if (points.length === 0) return keep;
  const sorted = [...points].sort((a, b) => a.seq - b.seq);
  keep.add(sorted.at(-1)!.seq);
  const tiers = [...policy.tiers].sort((a, b) => b.afterMs - a.afterMs); // the oldest tier first
  const bucketsTaken = new Set<string>();
  for (const p of sorted) {
    const age = nowMs - madeAt(p);
    if (pinned(p, policy.pinTags) || (p.consistency === 'APP' && age <= policy.appWindowMs)) {
      keep.add(p.seq);
      continue;
    }
    if (age > policy.windowMs) continue;
    const tierIndex = tiers.findIndex((t) => age > t.afterMs);
    if (tierIndex < 0) {
      keep.add(p.seq);
      continue;
    }
    const bucket = `${tierIndex}:${Math.floor(madeAt(p) / tiers[tierIndex]!.everyMs)}`;
    if (!bucketsTaken.has(bucket)) {
      bucketsTaken.add(bucket);
      keep.add(p.seq);
    }
  }
  return keep;
}
