// What the configuration server remembers, behind one interface so a PostgreSQL backend can follow the
// embedded SQLite one (sqlite-store.ts) for large fleets: volume history in three tiers, the recovery
// points seen, each daemon's last state, sessions and the audit log.

/** One volume at one collection. Backlogs are bytes waiting at each hop; appliedBytes counts since the master target started. */
export interface VolumeSample {
  volume: string;
  atMs: number;
  rpoMs: number | null;
  agentBacklog: number | null;
  psBacklog: number | null;
  mtBacklog: number | null;
  appliedBytes: number | null;
  appliedSeq: number | null;
  mode: string;
}

/** A tier of history: raw samples, then one row per minute, then per ten minutes (max of each figure, last counter). */
export interface Tier { readonly id: number; readonly bucketMs: number; readonly keepMs: number }

export const TIERS: readonly Tier[] = [
  { id: 0, bucketMs: 0, keepMs: 2 * 3_600_000 },
  { id: 1, bucketMs: 60_000, keepMs: 2 * 86_400_000 },
  { id: 2, bucketMs: 600_000, keepMs: 8 * 86_400_000 },
];

/** The tier that covers the last `spanMs` at the finest grain. */
export function tierFor(spanMs: number): Tier {
  return TIERS.find((t) => t.keepMs >= spanMs) ?? TIERS[TIERS.length - 1]!;
}

export interface PointSeen { volume: string; seq: number; atMs: number; consistency: string; tags: string[] }

export interface DaemonState {
  name: string;
  up: boolean;
  /** Why it is not up (connection refused, timed out, bad answer), or null. */
  cause: string | null;
  /** When it went down or came up. */
  sinceMs: number;
  lastOkMs: number | null;
  /** The last /status answer (kept while down, so its volumes stay on the page). */
  snapshot: Record<string, unknown> | null;
}

export interface AuditEntry {
  id?: number;
  atMs: number;
  user: string;
  action: string;
  target: string;
  params: Record<string, unknown>;
  result: 'ok' | 'refused' | 'failed' | 'started';
  detail: string;
}

export interface Session { idHash: string; user: string; role: 'viewer' | 'operator'; csrf: string; expiresMs: number }

export interface PlanRunRecord {
  id: number;
  plan: string;
  test: boolean;
  user: string;
  startedMs: number;
  finishedMs: number | null;
  state: 'running' | 'waiting-approval' | 'succeeded' | 'failed';
  /** The per-step progress and the report (plans.ts). */
  steps: unknown[];
}

/** A guided failover, reverse and failback of one volume (guided.ts), kept whole as JSON beside its id. */
export interface GuidedRecord {
  id: number;
  volume: string;
  state: 'active' | 'done' | 'aborted';
  /** The rest of the sequence (guided.ts, GuidedSequence). */
  body: Record<string, unknown>;
}

export interface Store {
  /** Record one collection round's samples and points, atomically. */
  record(samples: readonly VolumeSample[], points: readonly PointSeen[], daemons: readonly DaemonState[]): void;
  history(volume: string, tier: Tier, fromMs: number): VolumeSample[];
  points(volume: string, limit: number): PointSeen[];
  daemonStates(): DaemonState[];
  /** Drop what every tier holds past its keep time. */
  prune(nowMs: number): void;
  audit(e: AuditEntry): number;
  auditList(limit: number, volume?: string): AuditEntry[];
  putSession(s: Session): void;
  getSession(idHash: string): Session | null;
  deleteSession(idHash: string): void;
  putPlanRun(r: Omit<PlanRunRecord, 'id'> & { id?: number }): number;
  planRuns(limit: number): PlanRunRecord[];
  planRun(id: number): PlanRunRecord | null;
  /** Insert (no id) or update a guided sequence; its id. */
  putGuided(r: Omit<GuidedRecord, 'id'> & { id?: number }): number;
  guided(id: number): GuidedRecord | null;
  guidedList(limit: number): GuidedRecord[];
  /** Bytes the history of all volumes takes (bench: bytes per volume per day). */
  historyBytes(): number;
  close(): void;
}
