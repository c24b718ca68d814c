// The process server daemon: accepts agents over mutual TLS into its durable cache, and forwards each
// volume, in order, to its master target. build (constructor) is separate from open(), for tests.
import { resolveFrom } from '../common/config.js';
import { DaemonShell } from '../common/daemon-shell.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { trustPaths } from '../common/peer-trust.js';
import { processServerMetrics } from './metrics.js';
import { connectTls } from '../common/tls.js';
import { FramedConnection } from '../proto/connection.js';
import { DiffReceiver } from '../proto/receiver.js';
import { DiffSender } from '../proto/sender.js';
import { Cache, type CacheLinks } from './cache.js';
import type { PsConfig } from './config.js';
import { Routes } from './routes.js';
import { realClock, Throttle } from './throttle.js';

/** A master target that acknowledged nothing for this long is not draining its volumes. */
const DRAIN_STALL_MS = 10_000;

export class ProcessServer {
  cache!: Cache;
  receiver!: DiffReceiver;
  /** One bandwidth cap shared by every forwarder. */
  throttle!: Throttle;
  readonly forwarders = new Map<string, DiffSender>();
  private routes: Routes | null = null;
  /** Identity, cache lock, listener, status (and its remote reads), and their closing (common/daemon-shell.ts). */
  private readonly shell: DaemonShell<FramedConnection>;
  port = 0;

  constructor(readonly config: PsConfig, private readonly log: Logger) {
    this.shell = new DaemonShell('process-server', log);
  }

  async open(): Promise<void> {
    const cfg = this.config;
    const metrics = processServerMetrics(this.log, () => this.snapshot());
    const p = (x: string): string => resolveFrom(cfg.configDir, x);
    const cacheDir = p(cfg.cacheDir);
    // Two process servers on one cache would forward and delete each other's differentials.
    const trust = await this.shell.start({ trust: trustPaths(cfg.tls, p), certPath: cfg.tls.cert, stateDir: cacheDir });
    // Collaborators given at construction: the receiver (agents' side) and each volume's forwarder.
    const routes = new Routes(cfg.volumes);
    this.routes = routes;
    const forwarderOf = (volumeId: string): DiffSender | undefined => {
      const mt = routes.masterTargetOf(volumeId);
      return mt === null ? undefined : this.forwarders.get(mt);
    };
    const links: CacheLinks = {
      ack: (v, seq) => this.receiver.ack(v, seq),
      requestResync: (v, reason) => this.receiver.requestResync(v, reason),
      setFlow: (f) => this.receiver.setFlow(f), // cache quota: slow down / backpressure to agents
      // A volume drains while its master target is connected and acknowledging; one that does not is the one
      // to hold back when the cache fills, not the volumes of the other master targets.
      draining: (v) => {
        const st = forwarderOf(v)?.stats;
        return !!st && st.connected && Date.now() - st.lastAckAt < DRAIN_STALL_MS;
      },
      committed: (v) => forwarderOf(v)?.notify(),
      query: (v, q, hashes) => {
        const fwd = forwarderOf(v);
        return fwd ? fwd.query(q, hashes) : Promise.reject(tmError('TM_ERR_CONNECTION', `volume ${v}: no forwarder for its master target ${routes.masterTargetOf(v)}`, { volume: v }));
      },
    };
    this.cache = new Cache(cfg, cacheDir, this.log.child({ component: 'cache' }), links);
    this.receiver = new DiffReceiver(this.cache, cfg.name, this.log.child({ component: 'receiver' }), cfg.maxDiffBytes);
    await this.cache.open();
    this.throttle = new Throttle(cfg.throttle ?? null, realClock, this.log.child({ component: 'throttle' }));
    for (const mt of cfg.masterTargets) {
      const fwd = new DiffSender({
        nodeName: cfg.name,
        role: 'process-server',
        log: this.log.child({ component: 'forwarder', peer: mt.name }),
        window: cfg.window,
        volumes: () => this.cache.outbound(mt.name),
        connect: () => connectTls(mt.host, mt.port, trust, { role: 'master-target', name: mt.name }),
        pace: (volumeId, bytes, signal) => this.throttle.pace(volumeId, bytes, signal),
      });
      this.forwarders.set(mt.name, fwd);
      fwd.start();
    }
    const port = await this.shell.listen({
      listen: cfg.listen, connections: cfg.connections, allowed: ['agent'],
      serve: (socket, peer) => {
        const conn = new FramedConnection(socket, peer.name);
        return { session: conn, done: this.receiver.serve(conn, peer) };
      },
    });
    this.port = port;
    const statusPort = await this.shell.serveStatus(cfg.statusPort, () => this.snapshot(), metrics);
    await this.shell.serveReads(cfg.operatorListen, { status: () => this.snapshot(), metrics });
    this.log.info({ port, statusPort }, 'process server started');
  }

  snapshot(): Record<string, unknown> {
    return {
      role: 'process-server',
      name: this.config.name,
      pid: process.pid,
      port: this.port,
      receiver: this.receiver?.stats,
      // Certificate names of the agents connected now (push-install waits for its agent to appear here).
      agents: [...this.shell.sessions].map((c) => c.peerLabel),
      forwarders: Object.fromEntries([...this.forwarders].map(([k, f]) => [k, f.stats])),
      throttle: this.throttle?.status(),
      cache: this.cache?.status(),
      volumes: [...(this.cache?.stores ?? new Map()).values()].map((s) => ({
        id: s.volumeId,
        storedSeq: s.storedSeq,
        forwardedSeq: s.doneSeq,
        backlogFiles: s.pending().length,
        backlogBytes: s.bytes,
        // Which forwarder carries it, and a resync the agent still owes (its cause), for `tidemark status`.
        masterTarget: this.routes?.masterTargetOf(s.volumeId) ?? null,
        resyncNeeded: s.state?.resyncNeeded?.reason ?? null,
        ...this.cache.volumeStatus(s.volumeId),
      })),
    };
  }

  /** Stop (idempotent): the shell first closes the listener and cuts the agents, then this, then its own parts. */
  close(): Promise<void> {
    return this.shell.close(async () => {
      for (const f of this.forwarders.values()) await f.close(); // a session's end withdraws its throttle waiter
      this.throttle?.close();
      await this.cache?.close();
    });
  }
}
