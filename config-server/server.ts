// `tidemark config-server`: the store, the collector and the HTTPS website, built separately from being
// started (open) so tests can drive it in-process. One server per state folder (common/state-lock.ts).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { writeFileDurable } from '../common/durable.js';
import { tmError, wrap } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { lockStateDir, type StateLock } from '../common/state-lock.js';
import { ActionRelay } from './actions.js';
import { RemoteOperator } from './remote.js';
import { Collector } from './collector.js';
import { csPath, type ConfigServerConfig } from './config.js';
import type { Alert } from './pages.js';
import type { PlanRoutes } from './plan-routes.js';
import type { PlanRunner } from './plans.js';
import type { AlertEngine } from './alerts.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';
import { webHandler } from './web.js';

/** The website's port, in the state folder (a listen port of 0 picks a free one). */
export const WEB_PORT_FILE = 'web-port';

export interface ConfigServerParts {
  /** Alert rules evaluated each round over the daemons' /metrics (alerts.ts). */
  alerts?: () => AlertEngine;
  plans?: (cs: ConfigServer) => PlanRoutes;
  /** The guided failover, reverse and failback (guided.ts). */
  guided?: (cs: ConfigServer) => PlanRoutes;
}

export class ConfigServer {
  store!: Store;
  collector!: Collector;
  relay!: ActionRelay;
  private remote: RemoteOperator | null = null;
  plans: PlanRunner | null = null;
  port = 0;
  private server: https.Server | null = null;
  private lock: StateLock | null = null;
  private closing: Promise<void> | null = null;

  constructor(readonly config: ConfigServerConfig, readonly log: Logger, private readonly parts: ConfigServerParts = {}) {}

  async open(): Promise<void> {
    const cfg = this.config;
    const stateDir = csPath(cfg, cfg.stateDir);
    await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
    this.lock = await lockStateDir(stateDir, 'a configuration server');
    const [cert, key] = await Promise.all([csPath(cfg, cfg.tls.cert), csPath(cfg, cfg.tls.key)].map((f) => fsp.readFile(f).catch((e: unknown) => {
      throw tmError('TM_ERR_PKI', `read ${f}: ${(e as Error).message} (issue one with: tidemark pki issue config-server ${cfg.name})`, { path: f });
    })));
    this.store = await SqliteStore.open(stateDir);
    // A client identity for daemons' remote operator ports, when any daemon has one.
    if (cfg.daemons.some((x) => x.remote !== undefined)) this.remote = await RemoteOperator.open(cfg, this.log.child({ component: 'trust' }));
    this.relay = new ActionRelay(cfg, this.remote);
    const engine = this.parts.alerts?.() ?? null;
    if (engine?.unsupported.length) this.log.warn({ rules: engine.unsupported }, 'alert rules in a form not evaluated here');
    this.collector = new Collector(cfg.daemons, (p) => csPath(cfg, p), this.store, cfg.intervalMs, this.log.child({ component: 'collector' }), engine ? (s, down, now) => engine.update(s, down, now) : null, this.remote);
    const handler = webHandler({
      cfg, store: this.store, collector: this.collector, relay: this.relay, log: this.log.child({ component: 'web' }),
      alerts: (): Alert[] => engine?.alerts() ?? [],
      plans: this.parts.plans?.(this) ?? null,
      guided: this.parts.guided?.(this) ?? null,
    });
    this.server = https.createServer({ cert: cert!, key: key!, minVersion: 'TLSv1.2' }, handler);
    this.server.headersTimeout = 15_000;
    this.server.requestTimeout = 0; // actions (a recovery) may take long; headers and idle sockets stay bounded
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', (e) => reject(wrap(e, `listen on ${cfg.listen.host}:${cfg.listen.port}`)));
      this.server!.listen(cfg.listen.port, cfg.listen.host, resolve);
    });
    this.port = (this.server.address() as AddressInfo).port;
    await writeFileDurable(path.join(stateDir, WEB_PORT_FILE), String(this.port));
    this.collector.start();
    this.log.info({ port: this.port, daemons: cfg.daemons.length, intervalMs: cfg.intervalMs }, 'configuration server started');
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.collector?.stop();
      if (this.server) {
        await new Promise<void>((resolve) => {
          this.server!.close(() => resolve());
          this.server!.closeAllConnections();
        });
      }
      this.store?.close();
      this.remote?.close();
      await this.lock?.release();
      this.log.info('configuration server stopped');
    })();
    return this.closing;
  }

  destroy(): Promise<void> {
    return this.close();
  }
}
