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
import { fileAgeMs } from '../common/metrics.js';
import { masterTargetMetrics } from './metrics.js';
import { TlsListener } from '../common/tls-listener.js';
import { FramedConnection } from '../proto/connection.js';
import { DiffStore } from '../proto/diff-store.js';
import type { Diff, ExtentRecord } from '../proto/hrl.js';
import type { DiffBegin, HashAnswer, HashQuery, OpenVolume } from '../proto/messages.js';
import { decodeHashes } from '../proto/range-hash.js';
import { ReplicaHashes } from './replica-hashes.js';
import { SEED_FILE } from './seed.js';
import { promises as fsp } from 'node:fs';
import { DiffReceiver, type InboundSink, type Peer, type ResyncRequest, type Transformed } from '../proto/receiver.js';
import { Applier } from './applier.js';
import type { MtConfig } from './config.js';
import { Replica } from './replica.js';
import { replacedHow } from '../common/replica-identity.js';
import { FLAG_RESYNC, FLAG_RESYNC_END } from '../proto/hrl.js';
import { PointSnapshots } from './point-snapshots.js';
import { currentPoint } from './volume-state.js';
import { RetentionLog } from './retention/retention-log.js';
import { recoverPoint, type RecoverProgress, type RecoverySource } from './recover.js';
import { BucketTier } from './bucket/tier.js';
import { BucketStore } from './bucket/store.js';
import { loadCredentials } from './bucket/credentials.js';
import { TestFailovers } from './test-failover.js';
import { operatorAction } from './operator-actions.js';

interface Target {
  store: DiffStore;
  replicaPath: string;
  snapshots: PointSnapshots | null;
  retentionConfig: MtConfig['volumes'][number]['retention'];
  retention: RetentionLog | null;
  objectStoreConfig: MtConfig['volumes'][number]['objectStore'];
  tier: BucketTier | null;
  maintenance: NodeJS.Timeout | null;
  replica: Replica | null;
  applier: Applier | null;
  /** Opening and attaching run one at a time per volume: two appliers would each keep their own hash table. */
  opening: Promise<unknown>;
  /** The last time the replica was found replaced under its path (TM_ERR_REPLICA_REPLACED), and how many times. */
  replaced: { atMs: number; reason: string } | null;
  replacements: number;
  /** A seeded replica adopted but not hashed yet: its attach hashes it in the background (ReplicaHashes.seed). */
  seedPending?: boolean;
}

export class MasterTarget implements InboundSink {
  readonly targets = new Map<string, Target>();
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
      const store = new DiffStore(path.join(p(cfg.stateDir), 'volumes', v.id), v.id, this.log.child({ volume: v.id }));
      await store.open();
      const snapshots = v.snapshots ? new PointSnapshots(v.id, p(v.replica), { dir: p(v.snapshots.dir), keep: v.snapshots.keep }, this.log.child({ volume: v.id })) : null;
      const t: Target = { store, replicaPath: p(v.replica), snapshots, retentionConfig: v.retention, retention: null, objectStoreConfig: v.objectStore, tier: null, maintenance: null, replica: null, applier: null, opening: Promise.resolve(), replaced: null, replacements: 0 };
      this.targets.set(v.id, t);
      // A volume seen before: finish any differential a crash interrupted, before accepting more.
      // One volume's trouble (missing replica, EIO) must not stop the others: report it and go on.
      if (store.state) {
        await this.serially(t, () => this.attach(t)).catch((e) => {
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

  /** Run `fn` after every open or attach of this volume begun before it. */
  private serially<T>(t: Target, fn: () => Promise<T>): Promise<T> {
    const run = t.opening.then(fn, fn);
    t.opening = run.catch(() => {});
    return run;
  }

  private async attach(t: Target): Promise<void> {
    const { sizeBytes, blockSize } = t.store.state!;
    t.replica = await Replica.open(t.replicaPath, sizeBytes);
    await t.snapshots?.open();
    const hashes = new ReplicaHashes(t.store.dir, sizeBytes, blockSize, this.log.child({ volume: t.store.volumeId }));
    const recorded = t.store.state!.replica;
    const how = recorded ? replacedHow(recorded, t.replica.identity) : null;
    const rc = t.retentionConfig;
    if (rc && !t.retention) {
      t.retention = new RetentionLog(path.join(t.store.dir, 'retention'), t.store.volumeId, { sizeBytes, blockSize }, rc, this.log.child({ component: 'retention', volume: t.store.volumeId }));
      await t.retention.open();
      const maintain = (): void => {
        void t.retention?.maintain(Date.now(), t.store.doneSeq, currentPoint(t.store.state));
      };
      t.maintenance = setInterval(maintain, rc.maintenanceIntervalMs);
      t.maintenance.unref();
    }
    try {
      await this.attachTable(t, t.replica, hashes, how, recorded);
    } catch (e) {
      // A seed whose table no applier took is abandoned: the next attach makes its own.
      if (t.applier?.hashes !== hashes) hashes.abandon();
      throw e;
    }
  }

  /** The rest of attach(), once the replica is open. */
  private async attachTable(t: Target, replica: Replica, hashes: ReplicaHashes, how: string | null, recorded: unknown): Promise<void> {
    if (how) await this.adoptReplaced(t, hashes, how);
    else if (t.seedPending) {
      // The first attach of a seeded replica: its resync's questions and differentials wait only for the
      // blocks they touch to be hashed, not for the whole replica.
      await hashes.seed(replica);
      t.seedPending = false;
      if (!recorded) await t.store.setReplica(replica.identity);
    } else {
      await hashes.open(replica, { seq: t.store.state!.hashesSeq ?? 0, doneSeq: t.store.doneSeq, staged: t.store.pending() });
      // State from before identities were recorded: this is the replica the table was made from, as far as we can tell.
      if (!recorded) await t.store.setReplica(replica.identity);
    }
    const previous = t.applier;
    t.applier = new Applier(t.store.volumeId, t.store, replica, hashes, {
      applied: (seq) => this.receiver.ack(t.store.volumeId, seq),
      damaged: () => this.receiver.dropVolume(t.store.volumeId),
      replaced: (how) => void this.replaced(t, how),
      point: async (pt) => { await t.snapshots?.take(pt); },
    }, this.log.child({ component: 'applier', volume: t.store.volumeId }), t.retention);
    previous?.handOver(t.applier);
    if (previous && previous.hashes !== hashes) previous.hashes.abandon();
    if (t.objectStoreConfig && t.retention && !t.tier) await this.startTier(t, t.objectStoreConfig, t.retention);
    await t.applier.kick();
  }

  /** The volume's bucket tier: uploads in the background; local retention keeps what it has not confirmed. */
  private async startTier(t: Target, oc: NonNullable<Target['objectStoreConfig']>, retention: RetentionLog): Promise<void> {
    const { sizeBytes, blockSize } = t.store.state!;
    const credentials = loadCredentials(oc.credentialsFile ? resolveFrom(this.config.configDir, oc.credentialsFile) : undefined);
    const store = new BucketStore({ endpoint: oc.endpoint, region: oc.region, bucket: oc.bucket, prefix: oc.prefix, credentials, partSizeBytes: oc.partSizeMiB << 20, concurrency: oc.concurrency });
    const volumeId = t.store.volumeId;
    const tier = new BucketTier({
      volumeId, replicaPath: t.replicaPath, sizeBytes, blockSize, retention,
      doneSeq: () => t.store.doneSeq,
      // The applier of the moment: a replaced replica gets a new one.
      settledSeq: () => (t.applier ? t.applier.exclusive(async () => t.store.doneSeq) : Promise.resolve(t.store.doneSeq)),
    }, store, { imageIntervalMs: oc.imageInterval, fullEvery: oc.fullEvery, pollIntervalMs: oc.pollIntervalMs, retention: oc.retention ?? null }, t.store.dir, this.log.child({ component: 'bucket-tier', volume: volumeId }));
    retention.holdAfter(() => tier.keepAfter());
    t.tier = tier;
    await tier.open();
  }

  /**
   * The replica open now is not the one the hash table and retention were made from (replaced while we were
   * stopped, or found replaced while running and opened again): its content is unknown. In this order, so
   * a crash anywhere repeats it at the next attach (the recorded identity is still the old one): mark the
   * volume resyncing and owed a resync, forget the before-images read from the old replica, hash the new
   * one, then record its identity. The source's resync then sends only the blocks that differ.
   */
  private async adoptReplaced(t: Target, hashes: ReplicaHashes, how: string): Promise<void> {
    const volume = t.store.volumeId;
    const reason = `replica ${t.replicaPath} was replaced (${how})`;
    t.replaced = { atMs: Date.now(), reason };
    t.replacements++;
    this.log.error({ volume, code: 'TM_ERR_REPLICA_REPLACED', replica: t.replicaPath, err: how }, 'replica replaced under its path: treating its content as unknown; hashing it and asking the source for a resync');
    await t.store.flagResync(`TM_ERR_REPLICA_REPLACED: ${reason}`, { resyncing: true });
    await t.retention?.discardAll('replica replaced');
    await hashes.rebuild(t.replica!, t.store.doneSeq);
    await t.store.setReplica(t.replica!.identity, { hashesSeq: hashes.seq });
    const told = await this.receiver?.requestResync(volume, `TM_ERR_REPLICA_REPLACED: ${reason}`).catch(() => false);
    this.log.warn({ volume, told: told ?? false }, told ? 'source asked to resync the volume' : 'the source will be asked to resync when its process server connects');
  }

  /** Found while running: stop writing the old file at once, then attach the path's new one. */
  private replaced(t: Target, how: string): Promise<void> {
    const stale = t.replica;
    return this.serially(t, async () => {
      if (t.replica !== stale || !stale) return; // handled already
      this.log.error({ volume: t.store.volumeId, code: 'TM_ERR_REPLICA_REPLACED', replica: t.replicaPath, err: how }, 'replica replaced behind the running master target: no more writes to the old file');
      await t.applier?.close().catch(() => {}); // its last pass stopped at the check that called us
      t.applier?.hashes.abandon(); // a seed of the old file: its table must not be saved
      await stale.close();
      t.replica = null;
      try {
        await this.attach(t);
      } catch (e) {
        // Not attached: the next OpenVolume tries again from the start.
        const half = t.replica as Replica | null; // attach may have opened the new file before it failed
        await half?.close().catch(() => {});
        t.replica = null;
        const err = wrap(e, `attach replica ${t.replicaPath}`, { volume: t.store.volumeId });
        t.replaced = { atMs: Date.now(), reason: `replica ${t.replicaPath} was replaced (${how}); ${err.message}` };
        if (t.applier) t.applier.stats.lastError = `${err.code}: ${err.message}`;
        this.log.error({ volume: t.store.volumeId, code: err.code, err: err.message }, 'replaced replica could not be attached; will retry when its process server connects');
        this.receiver.dropVolume(t.store.volumeId); // its reconnect's OpenVolume attaches again
      }
    });
  }

  /** Between differentials too: a replica replaced while nothing is applied is found within one interval. */
  private async checkReplicas(): Promise<void> {
    for (const t of this.targets.values()) {
      const r = t.replica;
      if (!r || !t.applier) continue;
      const how = await r.replaced().catch(() => null);
      if (how) await this.replaced(t, how);
    }
  }

  /**
   * First sight of a volume. A missing image file is created sparse, so its hashes are known without
   * reading it; an existing file or device (a replica seeded out of band) is hashed, and the agent's
   * initial resync then sends only the blocks that differ. The hash table is written before the volume's
   * state: a crash in between simply prepares it again.
   */
  private async prepareReplica(t: Target, ov: OpenVolume): Promise<void> {
    const log = this.log.child({ volume: ov.volumeId });
    const hashes = new ReplicaHashes(t.store.dir, ov.sizeBytes, ov.blockSize, log);
    const exists = await fsp.stat(t.replicaPath).then(() => true, () => false);
    const replica = exists ? await Replica.open(t.replicaPath, ov.sizeBytes) : await Replica.createSparse(t.replicaPath, ov.sizeBytes);
    try {
      if (exists) {
        const attached = await fsp.stat(path.join(t.store.dir, SEED_FILE)).then(() => true, () => false);
        if (attached) log.info({ replica: t.replicaPath }, 'seeded replica (attach-seeded): hashing it; the initial resync sends only blocks that differ');
        else log.warn({ replica: t.replicaPath }, 'new replication onto an existing replica: hashing it as a seed; blocks that differ will be overwritten');
        // Hashed by the attach that follows, in the background (ReplicaHashes.seed). No table until then:
        // one left here by an earlier replication must not be loaded as this replica's after a crash.
        await fsp.rm(path.join(t.store.dir, 'replica-hashes.bin'), { force: true });
        t.seedPending = true;
      } else {
        await hashes.initZero();
        log.info({ replica: t.replicaPath, sizeBytes: ov.sizeBytes }, 'replica created (sparse)');
      }
    } finally {
      await replica.close();
    }
  }

  /**
   * A resync question relayed from the agent: which of these ranges differ? Answered once everything the
   * agent said may touch these ranges (after_seq) is applied.
   */
  async answerQuery(q: HashQuery, hashes: Buffer): Promise<HashAnswer> {
    const t = this.target(q.volumeId);
    if (!t.applier || !t.replica) throw tmError('TM_ERR_PROTOCOL', `hash query for ${q.volumeId} before it was opened`, { volume: q.volumeId });
    await t.applier.applied(q.afterSeq);
    // The applier may have been replaced meanwhile (a replaced replica): answer from the current one.
    const { applier, replica } = t;
    if (!applier || !replica) throw tmError('TM_ERR_REPLICA_REPLACED', `${q.volumeId}: its replica was replaced and is not attached`, { volume: q.volumeId });
    // A seed still being hashed: these ranges' blocks first.
    if (q.ranges.length > 0) await applier.hashes.ready((Math.max(...q.ranges) + 1) * q.rangeBlocks);
    const theirs = decodeHashes(hashes);
    if (theirs.length !== q.ranges.length) throw tmError('TM_ERR_PROTOCOL', `hash query for ${q.volumeId} carries ${theirs.length} hashes for ${q.ranges.length} ranges`, { volume: q.volumeId });
    const compare = (): HashAnswer => ({
      volumeId: q.volumeId,
      requestId: q.requestId,
      differing: q.ranges.filter((r, i) => applier.hashes.rangeHash(r, q.rangeBlocks) !== theirs[i]),
    });
    // Comparing with the table is synchronous, so it sees it whole; only a re-read of the replica's data
    // (verify) must hold the applier still, or it could record data the applier is about to replace.
    if (!q.reread) return compare();
    return applier.exclusive(async () => {
      // Points reading damaged blocks would recover the damage: not listed again (docs/OPERATIONS.md §16).
      await applier.hashes.reread(replica, q.ranges, q.rangeBlocks, async (damaged) => {
        await t.retention?.markDamaged(damaged, t.store.doneSeq, { pending: damaged }, 'a verify re-read replica blocks that differ from what was written there');
      });
      return compare();
    });
  }

  /** What recovery needs of a volume: its replica, retention log, and a way to hold its applier still. */
  recoverySource(volumeId: string): RecoverySource {
    const t = this.target(volumeId);
    const { retention, applier, store } = t;
    if (!retention || !applier || !store.state) {
      throw tmError('TM_ERR_POINT_NOT_FOUND', `${volumeId} has ${retention || !t.retentionConfig ? 'no retention configured (add "retention" to its master target volume)' : 'not been replicated here yet'}: no point to recover`, { volume: volumeId });
    }
    return {
      volumeId,
      replicaPath: t.replicaPath,
      sizeBytes: store.state.sizeBytes,
      blockSize: store.state.blockSize,
      retention,
      doneSeq: () => store.doneSeq,
      currentPoint: () => currentPoint(store.state),
      hashes: () => applier.hashes.hashes,
      hold: (fn) => applier.exclusive(fn),
    };
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
    for (const t of this.targets.values()) {
      t.applier?.kick().catch((e) => {
        const err = wrap(e, `apply to ${t.replicaPath}`, { volume: t.store.volumeId });
        if (t.applier) t.applier.stats.lastError = `${err.code}: ${err.message}`;
        this.log.error({ volume: t.store.volumeId, code: err.code, err: err.message }, 'apply failed; will retry');
      });
    }
  }

  /**
   * Only the process servers configured for a volume may open it: any other certificate of our CA is
   * refused before anything is read, prepared or adopted. The peer learns only that this volume is not
   * served to it, not whether it exists or which volumes do; the log keeps the detail.
   */
  private authorize(peer: Peer, volumeId: string): Target {
    const t = this.targets.get(volumeId);
    const allowed = this.config.volumes.find((v) => v.id === volumeId)?.processServers ?? [];
    if (t && allowed.includes(peer.name)) return t;
    const detail = t
      ? `volume "${volumeId}" accepts only ${allowed.map((n) => `"${n}"`).join(', ')} (processServers in the master target's config)`
      : `volume "${volumeId}" is not configured here; ${didYouMean(volumeId, [...this.targets.keys()])}`;
    throw tmError('TM_ERR_VOLUME_NOT_ASSIGNED', `volume "${volumeId}" is not served to "${peer.name}" here`, { volume: volumeId, peer: peer.name, detail });
  }

  private target(volumeId: string): Target {
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
    return this.serially(t, async () => {
      if (t.store.state === null) await this.prepareReplica(t, ov);
      // Not a consistent point until the initial resync has ended.
      await t.store.adopt(ov, { resyncing: true });
      if (!t.applier || !t.replica) await this.attach(t);
      // A replaced replica's resync is owed until the source starts it: told at every OpenVolume till then.
      const owed = t.store.state?.resyncNeeded;
      const capable = peer.capabilities?.includes('resync-needed') ?? false;
      return { dir: t.store.dir, resync: owed && capable ? { reason: owed.reason, regression: false } : undefined };
    });
  }

  async transform(_v: string, _s: number, e: ExtentRecord, payload: Buffer, payloadCrc: number): Promise<Transformed> {
    // Stored as received; verified (decompressed, checksummed) by the applier before any write.
    return { record: e, stored: payload, storedCrc: payloadCrc };
  }

  async committed(volumeId: string, seq: number, info: { diff: Diff | null; begin: DiffBegin }): Promise<void> {
    const t = this.target(volumeId);
    await t.store.added(seq, info.diff);
    // The source started the resync owed for a replaced replica.
    if (info.begin.flags & (FLAG_RESYNC | FLAG_RESYNC_END)) await t.store.clearResyncNeeded(seq);
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
      volumes: [...this.targets.values()].map((t) => ({
        id: t.store.volumeId,
        replica: t.replicaPath,
        storedSeq: t.store.storedSeq,
        backlogFiles: t.store.pending().length,
        backlogBytes: t.store.bytes,
        backlogAgeMs: fileAgeMs(t.store.pending().length > 0 ? t.store.file(t.store.pending()[0]!) : null),
        lastCrashPoint: t.store.state?.lastCrashPoint ?? null,
        lastAppPoint: t.store.state?.lastAppPoint ?? null,
        retention: t.retention?.stats ?? null,
        objectStore: t.tier?.status() ?? null,
        ...t.applier?.stats,
        replicaReplaced: t.replaced,
        replicaReplacements: t.replacements,
      })),
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
      for (const t of this.targets.values()) {
        if (t.maintenance) clearInterval(t.maintenance);
        await t.tier?.close();
        await t.retention?.lock(async () => {}); // let a maintenance pass finish
        await t.applier?.close();
        t.applier?.hashes.abandon(); // a seed not hashed yet is hashed again at the next start
        await t.replica?.close();
      }
      await this.status?.close();
      await this.lock?.release();
      this.log.info('master target stopped');
    })();
    return this.closing;
  }
}
