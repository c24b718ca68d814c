// One replicated volume on the master target: its folder `<stateDir>/volumes/<id>` (staging differentials and
// state.json in a DiffStore, the replica hash table, the retention log, the bucket tier's state), its
// replica, hash table, retention, bucket tier, applier and point snapshots. The daemon opens each configured
// volume with `open` and attaches it (MasterTarget); the CLI, with the daemon stopped and its state folder
// locked, opens one with `openOffline` to list or recover points. `tidemark attach-seeded`, `reverse` and
// `failover` find a volume's folder and state through the statics here.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { resolveFrom } from '../common/config.js';
import { tmError, wrap } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { fileAgeMs } from '../common/metrics.js';
import { replacedHow } from '../common/replica-identity.js';
import { DiffStore } from '../proto/diff-store.js';
import type { Diff } from '../proto/hrl.js';
import { FLAG_RESYNC, FLAG_RESYNC_END } from '../proto/hrl.js';
import type { HashAnswer, HashQuery, OpenVolume } from '../proto/messages.js';
import { decodeHashes } from '../proto/range-hash.js';
import { Applier } from './applier.js';
import { loadCredentials } from './bucket/credentials.js';
import type { BucketStore as BucketStoreClass } from './bucket/store.js';
import { BucketTier } from './bucket/tier.js';
import type { MtConfig } from './config.js';
import { PointSnapshots } from './point-snapshots.js';
import type { RecoverySource } from './recover.js';
import { Replica } from './replica.js';
import { ReplicaHashes } from './replica-hashes.js';
import { RetentionLog } from './retention/retention-log.js';
import { SEED_FILE, seedReplica } from './seed.js';
import { currentPoint, type MtVolumeState, type MtStore } from './volume-state.js';

export type MtVolumeConfig = MtConfig['volumes'][number];

/** How a daemon's volume reaches its source: through the receiver its process servers connect to. */
export interface VolumeLinks {
  /** Everything up to `seq` is applied and durable: acknowledge it. */
  applied(seq: number): void;
  /** A staged differential was found damaged: drop the volume's connection so it is sent again (resolves once its commits are over). */
  damaged(): Promise<void>;
  /** Ask the source for a resync now; false if no process server of the volume is connected. */
  requestResync(reason: string): Promise<boolean>;
}

export class MtVolume {
  /** `<stateDir>/volumes/<id>`: the volume's folder under a master target's state folder. */
  static dir(stateDir: string, id: string): string {
    return path.join(stateDir, 'volumes', id);
  }

  /** Record a replica seeded out of band for a volume not replicated yet (`tidemark attach-seeded`, `reverse`). */
  static attachSeeded(stateDir: string, id: string, replica: string, log: Logger): Promise<{ replica: string; sizeBytes: number }> {
    return seedReplica(MtVolume.dir(stateDir, id), replica, log);
  }

  /** The volume's geometry as its state.json records it, read without opening the volume (the daemon may run). */
  static async geometry(stateDir: string, id: string): Promise<{ sizeBytes: number; blockSize: number }> {
    const s = JSON.parse(await fsp.readFile(path.join(MtVolume.dir(stateDir, id), 'state.json'), 'utf8')) as { sizeBytes: number; blockSize: number };
    return { sizeBytes: s.sizeBytes, blockSize: s.blockSize };
  }

  /** The daemon's: the volume's staging opened; attach() opens the rest once the replica is known. */
  static async open(cfg: MtConfig, v: MtVolumeConfig, log: Logger, links: VolumeLinks): Promise<MtVolume> {
    const p = (x: string): string => resolveFrom(cfg.configDir, x);
    const store = new DiffStore<MtVolumeState>(MtVolume.dir(p(cfg.stateDir), v.id), v.id, log.child({ volume: v.id }));
    await store.open();
    const snapshots = v.snapshots ? new PointSnapshots(v.id, p(v.replica), { dir: p(v.snapshots.dir), keep: v.snapshots.keep }, log.child({ volume: v.id })) : null;
    return new MtVolume(store, p(v.replica), v, cfg.configDir, snapshots, log, links);
  }

  /**
   * The CLI's, with the master target stopped: the volume's staging, retention, replica and hash table read
   * from its folder, for listing and recovering points. Refused if the volume has no retention, has not
   * been replicated, or its replica was replaced since the daemon last ran. close() when done.
   */
  static async openOffline(cfg: MtConfig, volumeId: string, log: Logger): Promise<MtVolume> {
    const v = cfg.volumes.find((x) => x.id === volumeId);
    if (!v) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volumeId}" is not configured in this master target config`, { volume: volumeId });
    if (!v.retention) throw tmError('TM_ERR_POINT_NOT_FOUND', `${volumeId} has no retention configured: no point to recover`, { volume: volumeId });
    const store = new DiffStore<MtVolumeState>(MtVolume.dir(resolveFrom(cfg.configDir, cfg.stateDir), volumeId), volumeId, log);
    await store.open();
    if (!store.state) throw tmError('TM_ERR_POINT_NOT_FOUND', `${volumeId} has not been replicated here yet`, { volume: volumeId });
    const vol = new MtVolume(store, resolveFrom(cfg.configDir, v.replica), v, cfg.configDir, null, log, null);
    const { sizeBytes, blockSize } = store.state;
    vol.retention = new RetentionLog(vol.retentionDir, volumeId, { sizeBytes, blockSize }, v.retention, log);
    await vol.retention.open();
    const replica = await Replica.open(vol.replicaPath, sizeBytes);
    // Rolling another file back with this replica's before-images would recover bytes no point held.
    const how = store.state.replica ? replacedHow(store.state.replica, replica.identity) : null;
    if (how) {
      await replica.close();
      throw tmError('TM_ERR_REPLICA_REPLACED', `${volumeId}: the replica ${vol.replicaPath} was replaced since the master target last ran (${how}); its points cannot be recovered from it. Start the master target: it hashes the new replica and has the source resync it`, { volume: volumeId, path: vol.replicaPath });
    }
    vol.replica = replica;
    const hashes = new ReplicaHashes(store.dir, sizeBytes, blockSize, log);
    await hashes.open(replica, { seq: store.state.hashesSeq ?? 0, doneSeq: store.doneSeq, staged: store.pending() });
    vol.offlineHashes = hashes;
    return vol;
  }

  readonly id: string;
  replica: Replica | null = null;
  applier: Applier | null = null;
  retention: RetentionLog | null = null;
  tier: BucketTier | null = null;
  /** The last time the replica was found replaced under its path (TM_ERR_REPLICA_REPLACED), and how many times. */
  replaced: { atMs: number; reason: string } | null = null;
  replacements = 0;
  /** A seeded replica adopted but not hashed yet: its attach hashes it in the background (ReplicaHashes.seed). */
  private seedPending = false;
  private maintenance: NodeJS.Timeout | null = null;
  /** Opening and attaching run one at a time: two appliers would each keep their own hash table. */
  private opening: Promise<unknown> = Promise.resolve();
  /** Offline only: the hash table read from the folder (the daemon's is its applier's). */
  private offlineHashes: ReplicaHashes | null = null;

  private constructor(
    readonly store: MtStore,
    readonly replicaPath: string,
    private readonly config: MtVolumeConfig,
    private readonly configDir: string,
    readonly snapshots: PointSnapshots | null,
    private readonly log: Logger,
    private readonly links: VolumeLinks | null,
  ) {
    this.id = store.volumeId;
  }

  /** The volume's folder. */
  get dir(): string {
    return this.store.dir;
  }

  private get retentionDir(): string {
    return path.join(this.dir, 'retention');
  }

  /** Run `fn` after every open or attach of this volume begun before it. */
  serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.opening.then(fn, fn);
    this.opening = run.catch(() => {});
    return run;
  }

  /**
   * A process server opens the volume. The first time, its replica is prepared; then the offer is checked
   * against (or adopted as) the volume's state and the replica attached. A second OpenVolume (a
   * reconnecting process server, whose old connection is still being torn down) waits for the first:
   * preparing and attaching happen once. Returns the resync owed, if the peer can be told of it.
   */
  openFor(ov: OpenVolume, capable: boolean): Promise<{ dir: string; resync?: { reason: string; regression: false } }> {
    return this.serially(async () => {
      if (this.store.state === null) await this.prepareReplica(ov);
      // Not a consistent point until the initial resync has ended.
      await this.store.adopt(ov, { resyncing: true });
      if (!this.applier || !this.replica) await this.attach();
      // A replaced replica's resync is owed until the source starts it: told at every OpenVolume till then.
      const owed = this.store.state?.resyncNeeded;
      return { dir: this.store.dir, resync: owed && capable ? { reason: owed.reason, regression: false } : undefined };
    });
  }

  /** Open the replica, its hash table, retention, bucket tier and applier (the state is known). */
  async attach(): Promise<void> {
    const links = this.daemonLinks();
    const { sizeBytes, blockSize } = this.store.state!;
    this.replica = await Replica.open(this.replicaPath, sizeBytes);
    await this.snapshots?.open();
    const hashes = new ReplicaHashes(this.store.dir, sizeBytes, blockSize, this.log.child({ volume: this.id }));
    const recorded = this.store.state!.replica;
    const how = recorded ? replacedHow(recorded, this.replica.identity) : null;
    const rc = this.config.retention;
    if (rc && !this.retention) {
      const retention = new RetentionLog(this.retentionDir, this.id, { sizeBytes, blockSize }, rc, this.log.child({ component: 'retention', volume: this.id }));
      this.retention = retention;
      await retention.open();
      const maintain = (): void => {
        void this.retention?.maintain(Date.now(), this.store.doneSeq, currentPoint(this.store.state));
      };
      this.maintenance = setInterval(maintain, rc.maintenanceIntervalMs);
      this.maintenance.unref();
    }
    try {
      await this.attachTable(this.replica, hashes, how, recorded, links);
    } catch (e) {
      // A seed whose table no applier took is abandoned: the next attach makes its own.
      if (this.applier?.hashes !== hashes) hashes.abandon();
      throw e;
    }
  }

  /** The rest of attach(), once the replica is open. */
  private async attachTable(replica: Replica, hashes: ReplicaHashes, how: string | null, recorded: unknown, links: VolumeLinks): Promise<void> {
    // Loaded now, not at start-up (the S3 client is 0.25 s of CPU to load, and most volumes have no bucket),
    // and before the applier exists: from there to the tier's retention hold nothing may wait.
    const bucketStore = this.config.objectStore && !this.tier ? (await import('./bucket/store.js')).BucketStore : null;
    if (how) await this.adoptReplaced(hashes, how, links);
    else if (this.seedPending) {
      // The first attach of a seeded replica: its resync's questions and differentials wait only for the
      // blocks they touch to be hashed, not for the whole replica.
      await hashes.seed(replica);
      this.seedPending = false;
      if (!recorded) await this.store.update({ replica: replica.identity });
    } else {
      await hashes.open(replica, { seq: this.store.state!.hashesSeq ?? 0, doneSeq: this.store.doneSeq, staged: this.store.pending() });
      // State from before identities were recorded: this is the replica the table was made from, as far as we can tell.
      if (!recorded) await this.store.update({ replica: replica.identity });
    }
    const previous = this.applier;
    this.applier = new Applier(this.id, this.store, replica, hashes, {
      applied: (seq) => links.applied(seq),
      damaged: () => links.damaged(),
      replaced: (how) => void this.replacedWhileRunning(how),
      point: async (pt) => { await this.snapshots?.take(pt); },
      pointTakesReplica: Boolean(this.snapshots),
    }, this.log.child({ component: 'applier', volume: this.id }), this.retention);
    previous?.handOver(this.applier);
    if (previous && previous.hashes !== hashes) previous.hashes.abandon();
    if (bucketStore && this.config.objectStore && this.retention && !this.tier) await this.startTier(bucketStore, this.config.objectStore, this.retention);
    await this.applier.kick();
  }

  /** The volume's bucket tier: uploads in the background; local retention keeps what it has not confirmed. */
  private async startTier(BucketStore: typeof BucketStoreClass, oc: NonNullable<MtVolumeConfig['objectStore']>, retention: RetentionLog): Promise<void> {
    const { sizeBytes, blockSize } = this.store.state!;
    const credentials = loadCredentials(oc.credentialsFile ? resolveFrom(this.configDir, oc.credentialsFile) : undefined);
    const bucket = new BucketStore({ endpoint: oc.endpoint, region: oc.region, bucket: oc.bucket, prefix: oc.prefix, credentials, partSizeBytes: oc.partSizeMiB << 20, concurrency: oc.concurrency });
    const tier = new BucketTier({
      volumeId: this.id, replicaPath: this.replicaPath, sizeBytes, blockSize, retention,
      doneSeq: () => this.store.doneSeq,
      // The applier of the moment: a replaced replica gets a new one.
      settledSeq: () => (this.applier ? this.applier.exclusive(async () => this.store.doneSeq) : Promise.resolve(this.store.doneSeq)),
    }, bucket, { imageIntervalMs: oc.imageInterval, fullEvery: oc.fullEvery, pollIntervalMs: oc.pollIntervalMs, retention: oc.retention ?? null }, this.store.dir, this.log.child({ component: 'bucket-tier', volume: this.id }));
    retention.holdAfter(() => tier.keepAfter());
    this.tier = tier;
    await tier.open();
  }

  /**
   * The replica open now is not the one the hash table and retention were made from (replaced while we were
   * stopped, or found replaced while running and opened again): its content is unknown. In this order, so
   * a crash anywhere repeats it at the next attach (the recorded identity is still the old one): mark the
   * volume resyncing and owed a resync, forget the before-images read from the old replica, hash the new
   * one, then record its identity. The source's resync then sends only the blocks that differ.
   */
  private async adoptReplaced(hashes: ReplicaHashes, how: string, links: VolumeLinks): Promise<void> {
    const volume = this.id;
    const reason = `replica ${this.replicaPath} was replaced (${how})`;
    this.replaced = { atMs: Date.now(), reason };
    this.replacements++;
    this.log.error({ volume, code: 'TM_ERR_REPLICA_REPLACED', replica: this.replicaPath, err: how }, 'replica replaced under its path: treating its content as unknown; hashing it and asking the source for a resync');
    await this.store.flagResync(`TM_ERR_REPLICA_REPLACED: ${reason}`, { resyncing: true });
    await this.retention?.discardAll('replica replaced');
    await hashes.rebuild(this.replica!, this.store.doneSeq);
    await this.store.update({ replica: this.replica!.identity, hashesSeq: hashes.seq });
    const told = await links.requestResync(`TM_ERR_REPLICA_REPLACED: ${reason}`).catch(() => false);
    this.log.warn({ volume, told }, told ? 'source asked to resync the volume' : 'the source will be asked to resync when its process server connects');
  }

  /** Found while running: stop writing the old file at once, then attach the path's new one. */
  private replacedWhileRunning(how: string): Promise<void> {
    const stale = this.replica;
    return this.serially(async () => {
      if (this.replica !== stale || !stale) return; // handled already
      this.log.error({ volume: this.id, code: 'TM_ERR_REPLICA_REPLACED', replica: this.replicaPath, err: how }, 'replica replaced behind the running master target: no more writes to the old file');
      await this.applier?.close().catch(() => {}); // its last pass stopped at the check that called us
      this.applier?.hashes.abandon(); // a seed of the old file: its table must not be saved
      await stale.close();
      this.replica = null;
      try {
        await this.attach();
      } catch (e) {
        // Not attached: the next OpenVolume tries again from the start.
        const half = this.replica as Replica | null; // attach may have opened the new file before it failed
        await half?.close().catch(() => {});
        this.replica = null;
        const err = wrap(e, `attach replica ${this.replicaPath}`, { volume: this.id });
        this.replaced = { atMs: Date.now(), reason: `replica ${this.replicaPath} was replaced (${how}); ${err.message}` };
        if (this.applier) this.applier.stats.lastError = `${err.code}: ${err.message}`;
        this.log.error({ volume: this.id, code: err.code, err: err.message }, 'replaced replica could not be attached; will retry when its process server connects');
        void this.daemonLinks().damaged(); // its reconnect's OpenVolume attaches again
      }
    });
  }

  /** Between differentials too: a replica replaced while nothing is applied is found within one interval. */
  async checkReplica(): Promise<void> {
    const r = this.replica;
    if (!r || !this.applier) return;
    const how = await r.replaced().catch(() => null);
    if (how) await this.replacedWhileRunning(how);
  }

  /**
   * First sight of the volume. A missing image file is created sparse, so its hashes are known without
   * reading it; an existing file or device (a replica seeded out of band) is hashed, and the agent's
   * initial resync then sends only the blocks that differ. The hash table is written before the volume's
   * state: a crash in between simply prepares it again.
   */
  private async prepareReplica(ov: OpenVolume): Promise<void> {
    const log = this.log.child({ volume: ov.volumeId });
    const hashes = new ReplicaHashes(this.store.dir, ov.sizeBytes, ov.blockSize, log);
    const exists = await fsp.stat(this.replicaPath).then(() => true, () => false);
    const replica = exists ? await Replica.open(this.replicaPath, ov.sizeBytes) : await Replica.createSparse(this.replicaPath, ov.sizeBytes);
    try {
      if (exists) {
        const attached = await fsp.stat(path.join(this.store.dir, SEED_FILE)).then(() => true, () => false);
        if (attached) log.info({ replica: this.replicaPath }, 'seeded replica (attach-seeded): hashing it; the initial resync sends only blocks that differ');
        else log.warn({ replica: this.replicaPath }, 'new replication onto an existing replica: hashing it as a seed; blocks that differ will be overwritten');
        // Hashed by the attach that follows, in the background (ReplicaHashes.seed). No table until then:
        // one left here by an earlier replication must not be loaded as this replica's after a crash.
        await fsp.rm(path.join(this.store.dir, 'replica-hashes.bin'), { force: true });
        this.seedPending = true;
      } else {
        await hashes.initZero();
        log.info({ replica: this.replicaPath, sizeBytes: ov.sizeBytes }, 'replica created (sparse)');
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
    if (!this.applier || !this.replica) throw tmError('TM_ERR_PROTOCOL', `hash query for ${q.volumeId} before it was opened`, { volume: q.volumeId });
    await this.applier.applied(q.afterSeq);
    // The applier may have been replaced meanwhile (a replaced replica): answer from the current one.
    const { applier, replica } = this;
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
        await this.retention?.markDamaged(damaged, this.store.doneSeq, { pending: damaged }, 'a verify re-read replica blocks that differ from what was written there');
      });
      return compare();
    });
  }

  /** A differential was staged: track it, and clear the resync owed once the source has started one. */
  async committed(seq: number, diff: Diff | null, flags: number): Promise<void> {
    await this.store.added(seq, diff);
    // The source started the resync owed for a replaced replica.
    if (flags & (FLAG_RESYNC | FLAG_RESYNC_END)) await this.store.clearResyncNeeded(seq);
  }

  /** Apply what is staged; a failure is kept in the applier's stats and logged, and retried later. */
  kick(): void {
    this.applier?.kick().catch((e) => {
      const err = wrap(e, `apply to ${this.replicaPath}`, { volume: this.id });
      if (this.applier) this.applier.stats.lastError = `${err.code}: ${err.message}`;
      this.log.error({ volume: this.id, code: err.code, err: err.message }, 'apply failed; will retry');
    });
  }

  /** What recovery needs of the volume: its replica, retention log, and a way to hold its applier still. */
  recoverySource(): RecoverySource {
    const { retention, applier, store, id: volumeId } = this;
    const offline = this.offlineHashes;
    if (!retention || !(applier || offline) || !store.state) {
      throw tmError('TM_ERR_POINT_NOT_FOUND', `${volumeId} has ${retention || !this.config.retention ? 'no retention configured (add "retention" to its master target volume)' : 'not been replicated here yet'}: no point to recover`, { volume: volumeId });
    }
    return {
      volumeId,
      replicaPath: this.replicaPath,
      sizeBytes: store.state.sizeBytes,
      blockSize: store.state.blockSize,
      retention,
      doneSeq: () => store.doneSeq,
      currentPoint: () => currentPoint(store.state),
      hashes: () => (applier ? applier.hashes.hashes : offline!.hashes),
      // Offline nothing applies: the CLI holds the state folder's lock.
      hold: (fn) => (applier ? applier.exclusive(fn) : fn()),
    };
  }

  /** The volume's line of the daemon's status. */
  status(): Record<string, unknown> {
    const s = this.store;
    return {
      id: this.id,
      replica: this.replicaPath,
      storedSeq: s.storedSeq,
      backlogFiles: s.pending().length,
      backlogBytes: s.bytes,
      backlogAgeMs: fileAgeMs(s.pending().length > 0 ? s.file(s.pending()[0]!) : null),
      lastCrashPoint: s.state?.lastCrashPoint ?? null,
      lastAppPoint: s.state?.lastAppPoint ?? null,
      retention: this.retention?.stats ?? null,
      objectStore: this.tier?.status() ?? null,
      ...this.applier?.stats,
      replicaReplaced: this.replaced,
      replicaReplacements: this.replacements,
    };
  }

  /** Stop the tier, retention maintenance and applier, and close the replica. */
  async close(): Promise<void> {
    if (this.maintenance) clearInterval(this.maintenance);
    await this.tier?.close();
    await this.retention?.lock(async () => {}); // let a maintenance pass finish
    await this.applier?.close();
    this.applier?.hashes.abandon(); // a seed not hashed yet is hashed again at the next start
    await this.replica?.close();
  }

  private daemonLinks(): VolumeLinks {
    if (!this.links) throw tmError('TM_ERR_USAGE', `volume ${this.id} was opened offline: only the master target daemon attaches it`, { volume: this.id });
    return this.links;
  }
}
