// Prometheus metrics of one daemon, served at GET /metrics by the status server. Every figure is read
// at scrape time from the daemon's status snapshot (the same object GET /status returns) through
// collect() callbacks: the replication path counts nothing twice and pays nothing for metrics.
// One Registry per daemon, never prom-client's global one, so several daemons can share a process.
import { statSync } from 'node:fs';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { loggedCodes, type Logger } from './log.js';

export type Hop = 'agent' | 'ps' | 'mt';
export type Snapshot = Record<string, unknown>;
type Labels = Record<string, string>;
export type Fill = (set: (labels: Labels, value: number) => void, snap: Snapshot) => void;

export const num = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
export const obj = (x: unknown): Snapshot | null => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Snapshot) : null);
export const volumesOf = (s: Snapshot): Snapshot[] => (Array.isArray(s.volumes) ? (s.volumes as unknown[]).map(obj).filter((v): v is Snapshot => v !== null) : []);

/**
 * A fill that sets one series per volume from a number (or boolean: 1/0) its status holds, scaled,
 * with `labels` added to `volume`; volumes without the figure get no series.
 */
export function perVolume(pick: (v: Snapshot) => unknown, scale = 1, labels: Labels = {}): Fill {
  return (set, s) => {
    for (const v of volumesOf(s)) {
      const raw = pick(v);
      const x = typeof raw === 'boolean' ? Number(raw) : num(raw);
      if (x !== null) set({ volume: String(v.id), ...labels }, x * scale);
    }
  };
}

/** How long ago a backlog file was written (ms), or 0 when there is none (or it just went). */
export function fileAgeMs(file: string | null): number {
  if (file === null) return 0;
  try {
    return Math.max(0, Date.now() - statSync(file).mtimeMs);
  } catch {
    return 0; // acknowledged and deleted between listing and stat
  }
}

export class DaemonMetrics {
  readonly registry = new Registry();
  private snap: Snapshot = {};
  private rendering: Promise<unknown> = Promise.resolve();

  constructor(readonly hop: Hop, log: Logger, private readonly snapshot: () => Snapshot) {
    collectDefaultMetrics({ register: this.registry });
    this.gauge('tidemark_daemon_info', 'Always 1; names the daemon.', ['hop', 'name'], (set, s) => set({ hop, name: String(s.name ?? '') }, 1));
    this.counter('tidemark_errors_total', 'Warnings and errors logged with a Tidemark error code (docs/ERRORS.md), by code, since the daemon started.', ['code'], (set) => {
      for (const [code, n] of loggedCodes(log)) set({ code }, n);
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** A gauge set at each scrape from the snapshot; series not set in a scrape disappear. */
  gauge(name: string, help: string, labelNames: string[], fill: Fill): void {
    const snapshot = () => this.snap; // `this` inside collect() is the gauge
    new Gauge({ name, help, labelNames, registers: [this.registry], collect() {
      this.reset();
      fill((l, v) => this.set(l, v), snapshot());
    } });
  }

  /** A counter whose totals the daemon already keeps: copied at each scrape, never incremented twice. */
  counter(name: string, help: string, labelNames: string[], fill: Fill): void {
    const snapshot = () => this.snap; // `this` inside collect() is the counter
    new Counter({ name, help, labelNames, registers: [this.registry], collect() {
      this.reset();
      fill((l, v) => this.inc(l, Math.max(0, v)), snapshot());
    } });
  }

  /** The exposition text; one snapshot per scrape, scrapes one at a time so each sees its own. */
  render(): Promise<string> {
    const out = this.rendering.then(() => {
      this.snap = this.snapshot();
      return this.registry.metrics();
    });
    this.rendering = out.catch(() => {});
    return out;
  }
}

interface PointView { atMs: number }

/**
 * Recovery-point metrics of one hop (agent: journaled; master target: applied). RPO is +Inf while the
 * volume has no recovery point at all (capture `none`, or none yet): the replica cannot be brought back
 * to any consistent instant, which is what an alert on the RPO should say.
 */
export function pointMetrics(m: DaemonMetrics, hop: Hop): void {
  const points = (v: Snapshot): Array<[string, PointView]> =>
    ([['crash', v.lastCrashPoint], ['app', v.lastAppPoint]] as const).flatMap(([c, p]) => (num(obj(p)?.atMs) !== null ? [[c, p as PointView] as [string, PointView]] : []));
  m.gauge('tidemark_rpo_seconds', 'Seconds since the capture instant of the newest recovery point (crash- or app-consistent) at this hop; +Inf when there is none.', ['volume', 'hop'], (set, s) => {
    for (const v of volumesOf(s)) {
      const newest = Math.max(...points(v).map(([, p]) => p.atMs));
      set({ volume: String(v.id), hop }, Number.isFinite(newest) ? Math.max(0, (Date.now() - newest) / 1000) : Infinity);
    }
  });
  m.gauge('tidemark_recovery_point_timestamp_seconds', 'Capture instant (Unix seconds) of the newest recovery point of each consistency class at this hop; absent until there is one.', ['volume', 'hop', 'consistency'], (set, s) => {
    for (const v of volumesOf(s)) for (const [consistency, p] of points(v)) set({ volume: String(v.id), hop, consistency }, p.atMs / 1000);
  });
}

/** What waits at this hop for the next one to make it durable. */
export function backlogMetrics(m: DaemonMetrics, hop: Hop, of: (v: Snapshot) => { bytes: unknown; files: unknown; ageMs: unknown }): void {
  m.gauge('tidemark_backlog_bytes', 'Bytes of differentials at this hop not yet acknowledged by the next (agent journal, process-server cache, master-target staging).', ['volume', 'hop'], perVolume((v) => of(v).bytes, 1, { hop }));
  m.gauge('tidemark_backlog_differentials', 'Differentials at this hop not yet acknowledged by the next.', ['volume', 'hop'], perVolume((v) => of(v).files, 1, { hop }));
  m.gauge('tidemark_backlog_age_seconds', 'How long the oldest differential in the backlog has waited at this hop; 0 when the backlog is empty.', ['volume', 'hop'], perVolume((v) => of(v).ageMs, 1 / 1000, { hop }));
}

/** Totals of the DiffReceiver (process server, master target). */
export function receiverMetrics(m: DaemonMetrics, hop: Hop): void {
  const r = (s: Snapshot, k: string): number | null => num(obj(s.receiver)?.[k]);
  const one = (k: string): Fill => (set, s) => {
    const x = r(s, k);
    if (x !== null) set({ hop }, x);
  };
  m.counter('tidemark_received_bytes_total', 'Extent bytes received from the previous hop, as they travelled.', ['hop'], one('bytesReceived'));
  m.counter('tidemark_received_differentials_total', 'Differentials received and made durable.', ['hop'], one('diffsReceived'));
  m.counter('tidemark_duplicate_differentials_total', 'Differentials received again after a reconnect and skipped.', ['hop'], one('duplicatesSkipped'));
  m.counter('tidemark_refused_bytes_total', 'Extent bytes of differentials refused part-way (too large, no room): not in tidemark_received_bytes_total.', ['hop'], one('bytesRefused'));
  m.counter('tidemark_refused_differentials_total', 'Differentials refused part-way (too large, no room to store them).', ['hop'], one('diffsRefused'));
}

/** Totals and state of DiffSenders (agent uploader, process-server forwarders), by peer. */
export function senderMetrics(m: DaemonMetrics, hop: Hop, senders: (s: Snapshot) => Array<[string, Snapshot]>): void {
  const each = (k: string): Fill => (set, s) => {
    for (const [peer, st] of senders(s)) {
      const x = typeof st[k] === 'boolean' ? Number(st[k]) : num(st[k]);
      if (x !== null) set({ hop, peer }, x);
    }
  };
  m.gauge('tidemark_peer_connected', '1 while connected to the next hop (peer: its name), else 0.', ['hop', 'peer'], each('connected'));
  m.gauge('tidemark_backpressure', '1 while the next hop asks this sender to begin no new differential (its cache is full), else 0.', ['hop', 'peer'], each('backpressure'));
  m.counter('tidemark_sent_bytes_total', 'Extent bytes sent to the next hop, as they travelled (resends included).', ['hop', 'peer'], each('bytesSent'));
  m.counter('tidemark_sent_differentials_total', 'Differentials sent to the next hop (resends included).', ['hop', 'peer'], each('diffsSent'));
  m.counter('tidemark_sent_refused_bytes_total', 'Extent bytes sent that the next hop refused (also in tidemark_sent_bytes_total).', ['hop', 'peer'], each('bytesRefused'));
  m.gauge('tidemark_volume_refused', 'Refusals in a row of the volume by the next hop (code: why), while it is set aside; absent once taken.', ['hop', 'peer', 'volume', 'code'], (set, s) => {
    for (const [peer, st] of senders(s)) {
      for (const [volume, r] of Object.entries(obj(st.refusals) ?? {})) {
        const n = num(obj(r)?.count);
        if (n !== null) set({ hop, peer, volume, code: String(obj(r)?.code ?? '') }, n);
      }
    }
  });
}
