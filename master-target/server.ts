// The master target daemon: accepts process servers over mutual TLS, stages each differential durably,
// applies it to the replica in order, and acknowledges only what is applied and fsync'd.
import path from 'node:path';
import { didYouMean, resolveFrom } from '../common/config.js';
import { DEFAULTS } from '../common/defaults.js';
import { tmError, wrap } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { PeerTrust, trustPaths } from '../common/peer-trust.js';
import { startStatusServer, type StatusServer } from '../common/status-server.js';
import { startOperatorSocket, type OperatorSocket } from '../common/operator-socket.js';
import { startOperatorListener, type OperatorListener } from '../common/operator-listener.js';
import { lockStateDir, type StateLock } from '../common/state-lock.js';
import { masterTargetMetrics } from './metrics.js';
import { TlsListener } from '../common/tls-listener.js';
import { FramedConnection } from '../proto/connection.js';
import type { Diff, ExtentRecord } from '../proto/hrl.js';
import type { DiffBegin, HashAnswer, HashQuery, OpenVolume } from '../proto/messages.js';
import { DiffReceiver, type InboundSink, type Peer, type ResyncRequest, type Transformed } from '../proto/receiver.js';
import type { MtConfig } from './config.js';
import { recoverPoint, type RecoverProgress, type RecoverySource } from './recover.js';
import { MtVolume } from './volume.js';
import { TestFailovers } from './test-failover.js';
import { operatorAction } from './operator-actions.js';

export class MasterTarget implements InboundSink {
  readonly targets = new Map<string, MtVolume>();
  receiver!: DiffReceiver;
  private listener: TlsListener | null = null;
  private trust: PeerTrust | null = null;
  private readonly connections = new Set<FramedConnection>();
  private status: StatusServer | null = null;
  private operator: OperatorSocket | null = null;
  private operatorRemote: OperatorListener | null = null;
  private lock: StateLock | null = null;
  private retry: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  testFailovers!: TestFailovers;
  port = 0;

  constructor(readonly config: MtConfig, private readonly log: Logger) {}

  async open(): Promise<void> {
    const cfg = this.config;
    const metrics = masterTargetMetrics(this.log, () => this.snapshot());
    const p = (x: string): string => resolveFrom(cfg.configDir, x);
    const trust = await PeerTrust.open(trustPaths(cfg.tls, p), this.log.child({ component: 'trust' }));
    this.trust = trust;
    if (trust.identity.role !== 'master-target') throw tmError('TM_ERR_PKI', `certificate ${cfg.tls.cert} is for a ${trust.identity.role}, not a master target`);
    // Before anything reads the state: a second master target would run start-up recovery on live staging.
    this.lock = await lockStateDir(p(cfg.stateDir), 'a master target');
    this.receiver = new DiffReceiver(this, cfg.name, this.log.child({ component: 'receiver' }), cfg.maxDiffBytes);
    for (const v of cfg.volumes) {
      const t = await MtVolume.open(cfg, v, this.log, {
        applied: (seq) => this.receiver.ack(v.id, seq),
        damaged: () => this.receiver.dropVolume(v.id),
        requestResync: (reason) => this.receiver.requestResync(v.id, reason),
      });
      this.targets.set(v.id, t);
      // A volume seen before: finish any differential a crash interrupted, before accepting more.
      // One volume's trouble (missing replica, EIO) must not stop the others: report it and go on.
      if (t.store.state) {
        await t.serially(() => t.attach()).catch((e) => {
          const err = wrap(e, `attach replica ${t.replicaPath}`, { volume: v.id });
          this.log.error({ volume: v.id, code: err.code, err: err.message }, 'volume not attached; will retry when its process server connects');
        });
      }
    }
    this.listener = await TlsListener.listen({
      host: cfg.listen.host, port: cfg.listen.port, trust, allowed: ['process-server'], log: this.log.child({ component: 'listener' }),
      limits: { handshakeTimeoutMs: cfg.connections.handshakeTimeoutMs, maxConnections: cfg.connections.max, maxPerAddress: cfg.connections.perAddress },
      onPeer: (socket, peer) => {
        const conn = new FramedConnection(socket, peer.name);
        this.connections.add(conn);
        void this.receiver.serve(conn, peer).finally(() => this.connections.delete(conn));
      },
    });
    const port = this.listener.port;
    this.port = port;
    this.retry = setInterval(() => {
      this.kickAll();
      void this.checkReplicas();
    }, 2000);
    this.testFailovers = new TestFailovers(path.join(p(cfg.stateDir), 'test-failover'));
    this.status = await startStatusServer(DEFAULTS.statusHost, cfg.statusPort, p(cfg.stateDir), () => this.snapshot(), metrics);
    this.operator = await startOperatorSocket(p(cfg.stateDir), (action, params) => operatorAction(this, action, params), this.log.child({ component: 'operator' }));
    if (cfg.operatorListen) {
      const ol = cfg.operatorListen;
      this.operatorRemote = await startOperatorListener({
        host: ol.host, port: ol.port, trust, clients: ol.clients, act: (action, params) => operatorAction(this, action, params), log: this.log.child({ component: 'operator' }),
        stateDir: p(cfg.stateDir), limits: { handshakeTimeoutMs: ol.handshakeTimeoutMs, maxConnections: ol.maxConnections, maxPerAddress: ol.maxPerAddress },
      });
    }
    this.log.info({ port, statusPort: this.status.port }, 'master target started');
  }

  /**
   * A resync question relayed from the agent: which of these ranges differ? Answered once everything the
   * agent said may touch these ranges (after_seq) is applied.
   */
  async answerQuery(q: HashQuery, hashes: Buffer): Promise<HashAnswer> {
    return this.target(q.volumeId).answerQuery(q, hashes);
  }

  /** What recovery needs of a volume: its replica, retention log, and a way to hold its applier still. */
  recoverySource(volumeId: string): RecoverySource {
    return this.target(volumeId).recoverySource();
  }

  /** Recoveries running now, by output: what `tidemark recover` and `failover` show as progress. */
  readonly recoveries = new Map<string, RecoverProgress & { volume: string; out: string; startedAt: number }>();

  async recover(volumeId: string, opts: Parameters<typeof recoverPoint>[1]): ReturnType<typeof recoverPoint> {
    const entry = { volume: volumeId, out: opts.out, startedAt: Date.now(), phase: 'copy' as RecoverProgress['phase'], doneBytes: 0, totalBytes: 0 };
    this.recoveries.set(opts.out, entry);
    try {
      return await recoverPoint(this.recoverySource(volumeId), { ...opts, progress: (p) => Object.assign(entry, p) });
    } finally {
      this.recoveries.delete(opts.out);
    }
  }

  private kickAll(): void {
    for (const t of this.targets.values()) t.kick();
  }

  /** Between differentials too: a replica replaced while nothing is applied is found within one interval. */
  private async checkReplicas(): Promise<void> {
    for (const t of this.targets.values()) await t.checkReplica();
  }

  /**
   * Only the process servers configured for a volume may open it: any other certificate of our CA is
   * refused before anything is read, prepared or adopted. The peer learns only that this volume is not
   * served to it, not whether it exists or which volumes do; the log keeps the detail.
   */
  private authorize(peer: Peer, volumeId: string): MtVolume {
    const t = this.targets.get(volumeId);
    const allowed = this.config.volumes.find((v) => v.id === volumeId)?.processServers ?? [];
    if (t && allowed.includes(peer.name)) return t;
    const detail = t
      ? `volume "${volumeId}" accepts only ${allowed.map((n) => `"${n}"`).join(', ')} (processServers in the master target's config)`
      : `volume "${volumeId}" is not configured here; ${didYouMean(volumeId, [...this.targets.keys()])}`;
    throw tmError('TM_ERR_VOLUME_NOT_ASSIGNED', `volume "${volumeId}" is not served to "${peer.name}" here`, { volume: volumeId, peer: peer.name, detail });
  }

  private target(volumeId: string): MtVolume {
    const t = this.targets.get(volumeId);
    if (!t) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volumeId}" is not configured on this master target; ${didYouMean(volumeId, [...this.targets.keys()])}`, { volume: volumeId });
    return t;
  }

  // InboundSink (from process servers)
  /**
   * A second OpenVolume of the volume (a reconnecting process server, whose old connection is still being
   * torn down) waits for the first: preparing and attaching happen once.
   */
  async openVolume(peer: Peer, ov: OpenVolume): Promise<{ dir: string; resync?: ResyncRequest }> {
    const t = this.authorize(peer, ov.volumeId);
    return t.openFor(ov, peer.capabilities?.includes('resync-needed') ?? false);
  }

  async transform(_v: string, _s: number, e: ExtentRecord, payload: Buffer, payloadCrc: number): Promise<Transformed> {
    // Stored as received; verified (decompressed, checksummed) by the applier before any write.
    return { record: e, stored: payload, storedCrc: payloadCrc };
  }

  async committed(volumeId: string, seq: number, info: { diff: Diff | null; begin: DiffBegin }): Promise<void> {
    await this.target(volumeId).committed(seq, info.diff, info.begin.flags);
    this.kickAll();
  }

  storedSeq(volumeId: string): number {
    return this.target(volumeId).store.storedSeq;
  }

  ackedSeq(volumeId: string): number {
    return this.target(volumeId).store.doneSeq;
  }

  geometryOf(volumeId: string): { volumeSize: number; blockSize: number } {
    const s = this.target(volumeId).store.state;
    return { volumeSize: s?.sizeBytes ?? 0, blockSize: s?.blockSize ?? 0 };
  }

  snapshot(): Record<string, unknown> {
    return {
      role: 'master-target',
      name: this.config.name,
      pid: process.pid,
      port: this.port,
      receiver: this.receiver?.stats,
      recoveries: [...this.recoveries.values()],
      volumes: [...this.targets.values()].map((t) => t.status()),
    };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.operator?.close(); // no new operator action once stopping
      await this.operatorRemote?.close();
      if (this.retry) clearInterval(this.retry);
      const closed = this.listener?.close();
      for (const c of this.connections) c.destroy();
      await closed;
      this.trust?.close();
      for (const t of this.targets.values()) await t.close();
      await this.status?.close();
      await this.lock?.release();
      this.log.info('master target stopped');
    })();
    return this.closing;
  }
}
