// Every interval, ask each daemon for its status: a daemon entry with `remote` over its remote operator
// port (mutual TLS, the read-only actions `status` and `metrics`, config-server/remote.ts), so a daemon on
// another host is watched with the same authentication as it is acted on; else GET /status on its loopback
// status port (found from statusUrl or the status-port file in its state folder). Record the fleet's figures in the store, and mark a daemon that
// does not answer as down with the cause — within the same round, since each request is bounded by the
// interval. Rounds never overlap.
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import type { Logger } from '../common/log.js';
import type { DaemonEntry } from './config.js';
import type { RemoteOperator } from './remote.js';
import { fleetRows, type VolumeRow } from './fleet.js';
import { parseMetrics, type Sample } from './prom-text.js';
import type { DaemonState, PointSeen, Store, VolumeSample } from './store.js';

/** Snapshots larger than this are refused: a status answer is a few KiB per volume. */
const MAX_STATUS_BYTES = 16 * 1024 * 1024;

function getText(url: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`answered HTTP ${res.statusCode}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_STATUS_BYTES) req.destroy(new Error(`status answer larger than ${MAX_STATUS_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

async function getJson(url: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const text = await getText(url, timeoutMs);
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new Error(`answered something that is not a status snapshot: ${(e as Error).message}`);
  }
}

/** What a round hands the alert rules: every daemon's /metrics samples (labelled instance=<name>), and who is down. */
export type MetricsObserver = (samples: Sample[], down: Array<{ name: string; cause: string }>, nowMs: number) => void;

function causeOf(e: unknown, url: string): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return `connection refused at ${url} (the daemon is not running)`;
  // A refusal by a daemon's operator port (TM_ERR_PEER_REFUSED, TM_ERR_FORBIDDEN) says who and why already.
  if (typeof code === 'string' && code.startsWith('TM_ERR_')) return `${code}: ${(e as Error).message}`;
  return `${(e as Error).message}${code ? ` (${code})` : ''}${url ? ` at ${url}` : ''}`;
}

export class Collector {
  readonly states = new Map<string, DaemonState>();
  readonly roles: ReadonlyMap<string, string>;
  /** Daemons that run only during reverse replication: kept out of the fleet's volumes and of "down". */
  private readonly standby: ReadonlySet<string>;
  private rows: VolumeRow[] = [];
  private timer: NodeJS.Timeout | null = null;
  private round: Promise<void> | null = null;
  private stopped = false;
  rounds = 0;
  lastRoundMs = 0;

  constructor(
    private readonly daemons: readonly DaemonEntry[],
    private readonly resolve: (p: string) => string,
    private readonly store: Store,
    private readonly intervalMs: number,
    private readonly log: Logger,
    private readonly observe: MetricsObserver | null = null,
    private readonly remote: RemoteOperator | null = null,
  ) {
    this.roles = new Map(daemons.map((d) => [d.name, d.role]));
    this.standby = new Set(daemons.filter((d) => d.standby).map((d) => d.name));
    const known = new Set(daemons.map((d) => d.name));
    // What the last run saw, until the first round answers: a restart keeps the fleet on the page.
    for (const s of store.daemonStates()) if (known.has(s.name)) this.states.set(s.name, s);
    this.rows = fleetRows(this.forward(), this.roles, Date.now());
  }

  /** The states of the daemons that are not standby. */
  private forward(): DaemonState[] {
    return [...this.states.values()].filter((s) => !this.standby.has(s.name));
  }

  /** The fleet as of the last round. */
  fleet(): VolumeRow[] {
    return this.rows;
  }

  /** Where the daemon's status port is now (a daemon with port 0 gets a new one at each start). */
  private async urlOf(d: DaemonEntry): Promise<string> {
    if (d.statusUrl !== undefined) return d.statusUrl.replace(/\/+$/, '');
    const file = path.join(this.resolve(d.stateDir!), STATUS_PORT_FILE);
    const text = await fsp.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new Error(e.code === 'ENOENT' ? `not running: no ${STATUS_PORT_FILE} file in ${path.dirname(file)}` : `read ${file}: ${e.message}`);
    });
    const port = Number(text.trim());
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${file} does not hold a port number`);
    return `http://127.0.0.1:${port}`;
  }

  /** Status and metrics over the daemon's remote operator port. */
  private async pollRemote(d: DaemonEntry, timeoutMs: number): Promise<[Record<string, unknown>, string]> {
    if (!this.remote) throw new Error('this server has no client identity for remote operator ports (tls.ca)');
    const none = new URLSearchParams();
    const [snapshot, m] = await Promise.all([
      this.remote.ask(d, 'status', none, { timeoutMs }),
      this.observe ? this.remote.ask(d, 'metrics', none, { timeoutMs }).catch(() => ({ text: '' })) : { text: '' },
    ]);
    return [snapshot, typeof m.text === 'string' ? m.text : ''];
  }

  private async poll(d: DaemonEntry, timeoutMs: number): Promise<{ snapshot: Record<string, unknown>; metrics: Sample[] } | { cause: string }> {
    let url = d.remote ? `operator port ${d.remote.host}:${d.remote.port}` : d.statusUrl ?? '';
    try {
      let snapshot: Record<string, unknown>;
      let text: string;
      if (d.remote) [snapshot, text] = await this.pollRemote(d, timeoutMs);
      else {
        url = await this.urlOf(d);
        [snapshot, text] = await Promise.all([getJson(`${url}/status`, timeoutMs), this.observe ? getText(`${url}/metrics`, timeoutMs).catch(() => '') : '']);
      }
      if (snapshot.role !== d.role) return { cause: `${url} is a ${String(snapshot.role)}, not the ${d.role} configured` };
      const metrics = parseMetrics(text);
      for (const m of metrics) m.labels.instance = d.name;
      return { snapshot, metrics };
    } catch (e) {
      return { cause: causeOf(e, url) };
    }
  }

  /** One round: ask everyone, then record. */
  collectOnce(): Promise<void> {
    this.round ??= this.collect().finally(() => (this.round = null));
    return this.round;
  }

  private async collect(): Promise<void> {
    const started = Date.now();
    const timeoutMs = Math.max(100, Math.min(5000, Math.floor(this.intervalMs * 0.8)));
    const answers = await Promise.all(this.daemons.map(async (d) => [d, await this.poll(d, timeoutMs)] as const));
    const now = Date.now();
    const changed: DaemonState[] = [];
    for (const [d, a] of answers) {
      const prev = this.states.get(d.name);
      const up = 'snapshot' in a;
      const cause = up ? null : a.cause;
      const next: DaemonState = {
        name: d.name,
        up,
        cause,
        sinceMs: prev && prev.up === up ? prev.sinceMs : now,
        lastOkMs: up ? now : prev?.lastOkMs ?? null,
        snapshot: up ? a.snapshot : prev?.snapshot ?? null,
      };
      if (prev?.up !== up || prev?.cause !== cause) {
        if (up) this.log.info({ daemon: d.name }, 'daemon answers');
        else this.log.warn({ daemon: d.name, cause }, 'daemon down');
      }
      this.states.set(d.name, next);
      changed.push(next);
    }
    this.rows = fleetRows(this.forward(), this.roles, now);
    const samples: VolumeSample[] = this.rows.map((r) => ({ volume: r.id, atMs: now, rpoMs: r.rpoMs, agentBacklog: r.agentBacklog, psBacklog: r.psBacklog, mtBacklog: r.mtBacklog, appliedBytes: r.appliedBytes, appliedSeq: r.appliedSeq, mode: r.mode }));
    const points: PointSeen[] = this.rows.flatMap((r) => [r.lastCrashPoint, r.lastAppPoint].filter((p) => p !== null).map((p) => ({ volume: r.id, seq: p!.seq, atMs: p!.atMs, consistency: p!.consistency, tags: p!.tags })));
    this.store.record(samples, points, changed);
    if (this.observe) {
      const all = answers.flatMap(([, a]) => ('metrics' in a ? a.metrics : []));
      this.observe(all, answers.flatMap(([d, a]) => ('cause' in a && !d.standby ? [{ name: d.name, cause: a.cause }] : [])), now);
    }
    if (this.rounds++ % 30 === 0) this.store.prune(now);
    this.lastRoundMs = Date.now() - started;
  }

  start(): void {
    const loop = (): void => {
      if (this.stopped) return;
      const t0 = Date.now();
      this.collectOnce().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'collection round failed')).finally(() => {
        if (!this.stopped) this.timer = setTimeout(loop, Math.max(0, this.intervalMs - (Date.now() - t0)));
      });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.round;
  }
}
