// The agent's Prometheus metrics, read from Agent.snapshot() at scrape time (common/metrics.ts).
import { DaemonMetrics, backlogMetrics, obj, perVolume, pointMetrics, senderMetrics, volumesOf, type Snapshot } from '../common/metrics.js';
import type { Logger } from '../common/log.js';

const MODES = ['data', 'bitmap'] as const;

export function agentMetrics(log: Logger, snapshot: () => Snapshot): DaemonMetrics {
  const m = new DaemonMetrics('agent', log, snapshot);
  pointMetrics(m, 'agent');
  backlogMetrics(m, 'agent', (v) => ({ bytes: v.journalBytes, files: v.journalFiles, ageMs: v.backlogAgeMs }));
  senderMetrics(m, 'agent', (s) => {
    const u = obj(s.uploader);
    return u ? [[String(u.peer ?? ''), u]] : [];
  });
  const hop = { hop: 'agent' };
  m.gauge('tidemark_volume_size_bytes', 'Size of the protected volume.', ['volume'], perVolume((v) => v.sizeBytes));
  m.gauge('tidemark_last_sequence', 'Newest differential sequence number held at this hop (agent: journaled; process server: cached; master target: staged).', ['volume', 'hop'], perVolume((v) => v.lastSeq, 1, hop));
  m.gauge('tidemark_acked_sequence', 'Highest sequence number the next hop has acknowledged as durable.', ['volume', 'hop'], perVolume((v) => v.ackedSeq, 1, hop));
  m.gauge('tidemark_tracker_mode', '1 for the mode the volume is in (data: journaling differentials; bitmap: keeping only the dirty map), 0 for the other.', ['volume', 'mode'], (set, s) => {
    for (const v of volumesOf(s)) for (const mode of MODES) set({ volume: String(v.id), mode }, v.mode === mode ? 1 : 0);
  });
  m.gauge('tidemark_volume_drained', '1 while the volume is drained for a failover: not protected until `tidemark resume`.', ['volume'], perVolume((v) => v.drained !== null && v.drained !== undefined));
  m.gauge('tidemark_dirty_blocks', 'Blocks in the blocktrace dirty map not yet journaled (absent for the scan tracker).', ['volume'], perVolume((v) => v.dirtyBlocks));
  m.counter('tidemark_tracker_events_total', 'Kernel block events drained by the blocktrace tracker since the agent started.', ['volume'], perVolume((v) => obj(v.trackerStats)?.events));
  m.counter('tidemark_tracking_losses_total', 'Tracking losses (each starts a resync) seen by the blocktrace tracker since the agent started.', ['volume'], perVolume((v) => obj(v.trackerStats)?.lost));
  m.counter('tidemark_freeze_points_total', 'App-consistent points made by the freeze capture since the agent started.', ['volume'], perVolume((v) => obj(v.captureStats)?.points));
  m.counter('tidemark_freeze_failures_total', 'Freeze captures that failed (the point was dropped) since the agent started.', ['volume'], perVolume((v) => obj(v.captureStats)?.failures));
  m.gauge('tidemark_resync_active', '1 while a checksum resync, verify or repair pass is active.', ['volume'], perVolume((v) => obj(v.resync)?.active));
  m.gauge('tidemark_resync_pending', '1 until the replica is consistent again after a pass (the pass or its end marker is still to be journaled).', ['volume'], perVolume((v) => (typeof v.consistentAfterResync === 'boolean' ? !v.consistentAfterResync : null)));
  m.gauge('tidemark_resync_progress_ratio', 'Share of the volume compared by the current (or last) pass, 0 to 1.', ['volume'], perVolume((v) => obj(v.resync)?.percent, 1 / 100));
  m.gauge('tidemark_resync_sent_bytes', 'Bytes of differing blocks the current (or last) pass journaled.', ['volume'], perVolume((v) => obj(v.resync)?.bytesSent));
  m.gauge('tidemark_resync_eta_seconds', 'Estimated seconds until the active pass ends (0 when none is active).', ['volume'], perVolume((v) => obj(v.resync)?.etaMs, 1 / 1000));
  m.counter('tidemark_verify_passes_total', 'Complete background verify passes (source compared with the replica as read back).', ['volume'], perVolume((v) => obj(v.verify)?.passes));
  m.gauge('tidemark_verify_last_pass_age_seconds', 'Seconds since the last complete background verify pass ended (absent before the first).', ['volume'], perVolume((v) => obj(v.verify)?.lastPassAgeMs, 1 / 1000));
  m.counter('tidemark_verify_damaged_blocks_total', 'Replica blocks found differing from the source where nothing was being written (damage), by every background pass.', ['volume'], perVolume((v) => obj(v.verify)?.damagedBlocks));
  m.counter('tidemark_verify_repaired_blocks_total', 'Damaged replica blocks sent again by the repair that follows a background pass.', ['volume'], perVolume((v) => obj(v.verify)?.repairedBlocks));
  return m;
}
