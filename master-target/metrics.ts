// The master target's Prometheus metrics, read from MasterTarget.snapshot() at scrape time
// (common/metrics.ts).
import { DaemonMetrics, backlogMetrics, perVolume, pointMetrics, receiverMetrics, type Snapshot } from '../common/metrics.js';
import type { Logger } from '../common/log.js';

export function masterTargetMetrics(log: Logger, snapshot: () => Snapshot): DaemonMetrics {
  const m = new DaemonMetrics('mt', log, snapshot);
  pointMetrics(m, 'mt');
  backlogMetrics(m, 'mt', (v) => ({ bytes: v.backlogBytes, files: v.backlogFiles, ageMs: v.backlogAgeMs }));
  receiverMetrics(m, 'mt');
  m.gauge('tidemark_last_sequence', 'Newest differential sequence number held at this hop (agent: journaled; process server: cached; master target: staged).', ['volume', 'hop'], perVolume((v) => v.storedSeq, 1, { hop: 'mt' }));
  m.gauge('tidemark_applied_sequence', 'Sequence number of the last differential applied to the replica.', ['volume'], perVolume((v) => v.appliedSeq));
  m.counter('tidemark_applied_bytes_total', 'Data bytes written to the replica since the master target started.', ['volume'], perVolume((v) => v.appliedBytes));
  m.gauge('tidemark_replication_lag_seconds', 'Age of the newest data in the last applied differential when it was applied (its capture end on the source to its apply).', ['volume'], perVolume((v) => v.lagMs, 1 / 1000));
  m.gauge('tidemark_replica_consistent', '0 while a resync is under way on the replica (it is no usable image then), else 1.', ['volume'], perVolume((v) => v.consistent));
  m.counter('tidemark_replica_replaced_total', 'Times the replica was found replaced under its path (TM_ERR_REPLICA_REPLACED) since the master target started; each is followed by a resync.', ['volume'], perVolume((v) => v.replicaReplacements));
  m.gauge('tidemark_retention_bytes', 'Size of the volume\'s retention log (before-images kept for recovery).', ['volume'], perVolume((v) => (v.retention as { bytes?: number } | null)?.bytes));
  m.gauge('tidemark_retention_max_bytes', 'Cap on the volume\'s retention log (retention.maxBytes); absent when uncapped.', ['volume'], perVolume((v) => (v.retention as { maxBytes?: number | null } | null)?.maxBytes));
  m.gauge('tidemark_retention_points', 'Recovery points the retention log can take the replica back to.', ['volume'], perVolume((v) => (v.retention as { points?: number } | null)?.points));
  m.gauge('tidemark_retention_oldest_point_age_seconds', 'Age of the oldest retained recovery point (how far back recovery can go).', ['volume'], perVolume((v) => {
    const o = (v.retention as { oldestPoint?: { atMs: number } | null } | null)?.oldestPoint;
    return o ? Date.now() - o.atMs : undefined;
  }, 1 / 1000));
  m.gauge('tidemark_retention_apply_paused', '1 while apply is paused because the retention log is at its cap (onFull "pause").', ['volume'], perVolume((v) => ((v.retention as { paused?: string | null } | null)?.paused ? 1 : 0)));
  const tier = (v: Snapshot): Record<string, unknown> | null => v.objectStore as Record<string, unknown> | null;
  m.gauge('tidemark_bucket_backlog_segments', 'Sealed retention segments not yet confirmed in the bucket (objectStore).', ['volume'], perVolume((v) => tier(v)?.backlogSegments));
  m.gauge('tidemark_bucket_backlog_bytes', 'Bytes of the sealed retention segments not yet confirmed in the bucket.', ['volume'], perVolume((v) => tier(v)?.backlogBytes));
  m.gauge('tidemark_bucket_backlog_age_seconds', 'Age of the oldest sealed retention segment not yet confirmed in the bucket (0 when none).', ['volume'], perVolume((v) => tier(v)?.backlogAgeMs, 1 / 1000));
  m.gauge('tidemark_bucket_image_sequence', 'Sequence of the newest base image in the bucket: the newest point the bucket alone can rebuild.', ['volume'], perVolume((v) => tier(v)?.imageSeq));
  m.gauge('tidemark_bucket_listed_bytes', 'Bytes of the objects the bucket manifest lists (segments and images): what bucket retention\'s maxBytes bounds.', ['volume'], perVolume((v) => (tier(v)?.expiry as { listedBytes?: number } | undefined)?.listedBytes));
  m.gauge('tidemark_bucket_pending_deletes', 'Objects unlisted from the bucket manifest and not yet deleted (expiry, or an upload cut short).', ['volume'], perVolume((v) => (tier(v)?.expiry as { pendingDeletes?: number } | undefined)?.pendingDeletes));
  m.gauge('tidemark_bucket_error', '1 while the bucket tier\'s last pass failed (status objectStore.lastErrorCode says why), else 0.', ['volume'], perVolume((v) => (tier(v) ? (tier(v)!.lastError ? 1 : 0) : undefined)));
  const filesystems = (s: Snapshot): Array<Record<string, unknown>> => ((s.space as { filesystems?: Array<Record<string, unknown>> } | null)?.filesystems ?? []);
  m.gauge('tidemark_mt_filesystem_free_ratio', 'Free share (0 to 1) of each filesystem the master target writes to (state, replicas, snapshots) at the last check.', ['path'], (set, s) => {
    for (const f of filesystems(s)) set({ path: String(f.path) }, Number(f.freePercent) / 100);
  });
  m.gauge('tidemark_mt_filesystem_available_bytes', 'Space available on each filesystem the master target writes to at the last check.', ['path'], (set, s) => {
    for (const f of filesystems(s)) set({ path: String(f.path) }, Number(f.availBytes));
  });
  return m;
}
