// The process server's Prometheus metrics, read from ProcessServer.snapshot() at scrape time
// (common/metrics.ts). Cache, throttle and per-volume compression figures are read when the snapshot
// has them.
import { DaemonMetrics, backlogMetrics, num, obj, perVolume, receiverMetrics, senderMetrics, type Snapshot } from '../common/metrics.js';
import type { Logger } from '../common/log.js';

/** Raw and stored bytes of a volume: the compression block when there is one, else the cache's totals. */
function compression(v: Snapshot): { raw: number | null; stored: number | null; ratio: number | null } {
  const c = obj(v.compression);
  const raw = num(c?.rawBytes) ?? num(v.rawBytesIn);
  const stored = num(c?.storedBytes) ?? num(v.storedBytesIn);
  // Before the first byte there is no ratio (the compressor reports 1 then; a gauge should say nothing).
  const ratio = raw !== null && stored !== null && stored > 0 ? num(c?.ratio) ?? raw / stored : null;
  return { raw, stored, ratio };
}

const HEALTH = ['ok', 'warning', 'critical'];

/** "1 mon-fri 08:00-18:00" for the active schedule rule (or the string a newer snapshot may give). */
export function ruleName(r: unknown): string | null {
  if (typeof r === 'string') return r === '' ? null : r;
  const o = obj(r);
  return o ? [o.index, o.days, o.from !== undefined ? `${String(o.from)}-${String(o.to)}` : undefined].filter((x) => x !== undefined).map(String).join(' ') : null;
}

export function processServerMetrics(log: Logger, snapshot: () => Snapshot): DaemonMetrics {
  const m = new DaemonMetrics('ps', log, snapshot);
  const hop = { hop: 'ps' };
  backlogMetrics(m, 'ps', (v) => ({ bytes: v.backlogBytes, files: v.backlogFiles, ageMs: v.backlogAgeMs }));
  receiverMetrics(m, 'ps');
  senderMetrics(m, 'ps', (s) => Object.entries(obj(s.forwarders) ?? {}).flatMap(([peer, st]) => (obj(st) ? [[peer, obj(st)!] as [string, Snapshot]] : [])));
  m.gauge('tidemark_last_sequence', 'Newest differential sequence number held at this hop (agent: journaled; process server: cached; master target: staged).', ['volume', 'hop'], perVolume((v) => v.storedSeq, 1, hop));
  m.gauge('tidemark_acked_sequence', 'Highest sequence number the next hop has acknowledged as durable.', ['volume', 'hop'], perVolume((v) => v.forwardedSeq, 1, hop));
  m.counter('tidemark_compression_input_bytes_total', 'Extent bytes cached, before compression.', ['volume'], perVolume((v) => compression(v).raw));
  m.counter('tidemark_compression_output_bytes_total', 'Extent bytes cached, after compression (what is stored and forwarded).', ['volume'], perVolume((v) => compression(v).stored));
  m.gauge('tidemark_compression_ratio', 'Input over output bytes of the compression so far (absent before the first byte).', ['volume'], perVolume((v) => compression(v).ratio));
  m.counter('tidemark_compression_seconds_total', 'Time spent compressing, from hand-off to result: an upper bound of the CPU time (it includes waiting for a core).', ['volume'], perVolume((v) => obj(v.compression)?.cpuMs, 1 / 1000));
  m.counter('tidemark_compressed_extents_total', 'Extents stored compressed.', ['volume'], perVolume((v) => obj(v.compression)?.compressedExtents));
  m.counter('tidemark_compression_skipped_extents_total', 'Extents stored as they came (compression would not have saved enough, or rested).', ['volume'], perVolume((v) => obj(v.compression)?.skippedExtents));
  m.counter('tidemark_compression_probe_skipped_extents_total', 'Of the skipped extents, those whose samples did not compress, stored raw without compressing them whole.', ['volume'], perVolume((v) => obj(v.compression)?.probeSkippedExtents));
  m.gauge('tidemark_compression_resting', '1 while the volume\'s compression rests (its last window saved under compressionMinSavingPercent): extents stored raw, untried.', ['volume'], perVolume((v) => { const st = obj(v.compression)?.state; return st === undefined ? null : Number(st === 'resting'); }));
  m.counter('tidemark_compression_rested_bytes_total', 'Extent bytes stored raw, untried, while the volume\'s compression rested.', ['volume'], perVolume((v) => obj(v.compression)?.restedBytes));

  const cache = (s: Snapshot): Snapshot | null => obj(s.cache);
  const one = (pick: (s: Snapshot) => unknown, scale = 1) => (set: (l: Record<string, string>, x: number) => void, s: Snapshot): void => {
    const raw = pick(s);
    const x = typeof raw === 'boolean' ? Number(raw) : num(raw);
    if (x !== null) set({}, x * scale);
  };
  m.gauge('tidemark_cache_quota_bytes', 'Cache quota.', [], one((s) => cache(s)?.quotaBytes));
  m.gauge('tidemark_cache_used_bytes', 'Bytes the cache uses.', [], one((s) => cache(s)?.usedBytes));
  m.gauge('tidemark_cache_free_ratio', 'Free share of the cache, 0 to 1.', [], one((s) => cache(s)?.freePercent, 1 / 100));
  m.gauge('tidemark_cache_backpressure', '1 while agents are told to hold back because the cache is full.', [], one((s) => cache(s)?.backpressure));
  m.gauge('tidemark_cache_accept_delay_seconds', 'Wait imposed before each new differential from an agent while the cache fills (0: none).', [], one((s) => cache(s)?.acceptDelayMs, 1 / 1000));
  m.gauge('tidemark_cache_filesystem_available_bytes', 'Space the cache filesystem had available at the last check.', [], one((s) => cache(s)?.filesystemAvailBytes));
  m.gauge('tidemark_cache_health', '1 for the cache health level in force (ok, warning, critical), 0 for the others.', ['health'], (set, s) => {
    const h = cache(s)?.health;
    if (typeof h !== 'string') return;
    for (const level of new Set([...HEALTH, h])) set({ health: level }, level === h ? 1 : 0);
  });
  const throttle = (s: Snapshot): Snapshot | null => obj(s.throttle);
  m.gauge('tidemark_throttle_rate_bytes_per_second', 'Forwarding rate limit in force; 0 when unlimited.', [], one((s) => throttle(s)?.rateBytesPerSec));
  m.gauge('tidemark_throttle_waiting_volumes', 'Volumes waiting for the throttle right now.', [], one((s) => {
    const w = throttle(s)?.waitingVolumes;
    return Array.isArray(w) ? w.length : w;
  }));
  m.counter('tidemark_throttle_passed_bytes_total', 'Bytes the throttle let through.', [], one((s) => throttle(s)?.bytesPassed));
  m.gauge('tidemark_throttle_rule_active', '1 for the throttle schedule rule in force (rule: its index in throttle.schedule and its days and hours), absent when none.', ['rule'], (set, s) => {
    const r = ruleName(throttle(s)?.activeRule);
    if (r !== null) set({ rule: r }, 1);
  });
  return m;
}
