// The process server daemon: accepts agents over mutual TLS into its durable cache, and forwards each
// volume, in order, to its master target. build (constructor) is separate from open(), for tests.
import { resolveFrom } from '../common/config.js';
import { DEFAULTS } from '../common/defaults.js';
import { ensureDir } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { PeerTrust, trustPaths } from '../common/peer-trust.js';
import { startStatusServer, type StatusServer } from '../common/status-server.js';
import { lockStateDir, type StateLock } from '../common/state-lock.js';
import { processServerMetrics } from './metrics.js';
import { connectTls } from '../common/tls.js';
import { TlsListener } from '../common/tls-listener.js';
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
  private listener: TlsListener | null = null;
  private trust: PeerTrust | null = null;
  private readonly connections = new Set<FramedConnection>();
  private status: StatusServer | null = null;
  private lock: StateLock | null = null;
  private closing: Promise<void> | null = null;
  port = 0;

  constructor(readonly config: PsConfig, private readonly log: Logger) {}

  async open(): Promise<void> {
    const cfg = this.config;
    const metrics = processServerMetrics(this.log, () => this.snapshot());
    const p = (x: string): string => resolveFrom(cfg.configDir, x);
    const trust = await PeerTrust.open(trustPaths(cfg.tls, p), this.log.child({ component: 'trust' }));
    this.trust = trust;
    if (trust.identity.role !== 'process-server') throw tmError('TM_ERR_PKI', `certificate ${cfg.tls.cert} is for a ${trust.identity.role}, not a process server`);
    const cacheDir = p(cfg.cacheDir);
    await ensureDir(cacheDir);
    // Two process servers on one cache would forward and delete each other's differentials.
    this.lock = await lockStateDir(cacheDir, 'a process server');
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
    this.listener = await TlsListener.listen({
      host: cfg.listen.host, port: cfg.listen.port, trust, allowed: ['agent'], log: this.log.child({ component: 'listener' }),
      limits: { handshakeTimeoutMs: cfg.connections.handshakeTimeoutMs, maxConnections: cfg.connections.max, maxPerAddress: cfg.connections.perAddress },
      onPeer: (socket, peer) => {
        const conn = new FramedConnection(socket, peer.name);
        this.connections.add(conn);
        void this.receiver.serve(conn, peer).finally(() => this.connections.delete(conn));
      },
    });
    const port = this.listener.port;
    this.port = port;
    this.status = await startStatusServer(DEFAULTS.statusHost, cfg.statusPort, cacheDir, () => this.snapshot(), metrics);
    this.log.info({ port, statusPort: this.status.port }, 'process server started');
  }

  snapshot(): Record<string, unknown> {
    return {
      role: 'process-server',
      name: this.config.name,
      pid: process.pid,
      port: this.port,
      receiver: this.receiver?.stats,
      // Certificate names of the agents connected now (push-install waits for its agent to appear here).
      agents: [...this.connections].map((c) => c.peerLabel),
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

  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = this.listener?.close();
      for (const c of this.connections) c.destroy();
      await closed;
      for (const f of this.forwarders.values()) await f.close(); // a session's end withdraws its throttle waiter
      this.trust?.close();
      this.throttle?.close();
      await this.cache?.close();
      await this.status?.close();
      await this.lock?.release();
      this.log.info('process server stopped');
    })();
    return this.closing;
  }
}
