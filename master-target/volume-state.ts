// What only the master target keeps of a volume's state: the recovery points its replica reached and the
// fields of its staging state.json (docs/FORMAT.md §5) that describe the replica. The process server's
// cache never sets them.
import type { ReplicaIdentity } from '../common/replica-identity.js';
import type { DiffStore } from '../proto/diff-store.js';

/** A differential whose application left the replica at a crash- or app-consistent point. */
export interface RecoveryPoint {
  seq: number;
  /** The capture instant on the source (ms since the epoch). */
  atMs: number;
  consistency: 'CRASH' | 'APP';
  tags: string[];
  appliedAt: number;
}

/** The master-target fields of a volume's staging state.json, beside the store's own (doneSeq, geometry). */
export interface MtVolumeState {
  /** A resync is under way, so the replica is not at a consistent point. */
  resyncing?: boolean;
  /** The latest recovery point of each class applied to the replica. */
  lastCrashPoint?: RecoveryPoint;
  lastAppPoint?: RecoveryPoint;
  /** The sequence the replica hash table was last persisted as reflecting (checked at attach). */
  hashesSeq?: number;
  /** The file or device the replica was when its hash table was last made (checked at attach). */
  replica?: ReplicaIdentity;
}

/**
 * The point the replica is at now, if it is at one: the last differential applied left it crash- or
 * app-consistent, and no resync (a replaced replica before its resync started, say) has unsettled it.
 */
export function currentPoint(state: (MtVolumeState & { doneSeq: number }) | null): RecoveryPoint | null {
  if (!state || state.resyncing) return null;
  const app = state.lastAppPoint;
  const crash = state.lastCrashPoint;
  if (app?.seq === state.doneSeq) return app;
  if (crash?.seq === state.doneSeq) return crash;
  return null;
}

/** A master target's staging store: the shared DiffStore, its state.json carrying MtVolumeState. */
export type MtStore = DiffStore<MtVolumeState>;
