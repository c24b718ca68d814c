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
  return m;
}
