// `tidemark points --since/--until/--limit/--class`: which of the retained points to list. Checked
// before the master target is asked anything; a bad value is a usage error.
import { tmError } from '../common/errors.js';

export interface PointFilterArgs {
  since?: string;
  until?: string;
  limit?: string;
  class?: string;
}

export interface PointFilter {
  sinceMs: number | null;
  untilMs: number | null;
  limit: number | null;
  consistency: 'CRASH' | 'APP' | null;
}

const CLASSES = { crash: 'CRASH', app: 'APP' } as const;

/** The filter the flags describe; `parse` reads a time as --at does (ISO 8601, epoch ms, "15m ago"). */
export function pointFilter(a: PointFilterArgs, parse: (text: string, flag: string) => number): PointFilter {
  const sinceMs = a.since === undefined ? null : parse(a.since, '--since');
  const untilMs = a.until === undefined ? null : parse(a.until, '--until');
  if (sinceMs !== null && untilMs !== null && sinceMs > untilMs) throw tmError('TM_ERR_USAGE', `--since (${new Date(sinceMs).toISOString()}) is after --until (${new Date(untilMs).toISOString()}): no point can match`);
  let limit: number | null = null;
  if (a.limit !== undefined) {
    if (!/^\d+$/.test(a.limit) || Number(a.limit) < 1) throw tmError('TM_ERR_USAGE', `--limit must be a whole number of points, 1 or more, not "${a.limit}"`);
    limit = Number(a.limit);
  }
  let consistency: PointFilter['consistency'] = null;
  if (a.class !== undefined) {
    const c = CLASSES[a.class.toLowerCase() as keyof typeof CLASSES];
    if (!c) throw tmError('TM_ERR_USAGE', `--class must be crash or app, not "${a.class}"`);
    consistency = c;
  }
  return { sinceMs, untilMs, limit, consistency };
}

/** The points (oldest first) that pass: in [since, until], of the class; with a limit, the newest that many. */
export function filterPoints<P extends { atMs: number; consistency?: string }>(points: readonly P[], f: PointFilter): P[] {
  const kept = points.filter((p) => (f.sinceMs === null || p.atMs >= f.sinceMs) && (f.untilMs === null || p.atMs <= f.untilMs) && (f.consistency === null || p.consistency === f.consistency));
  return f.limit === null ? kept : kept.slice(-f.limit);
}
