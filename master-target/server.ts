// The master target daemon: accepts process servers over mutual TLS, stages each differential durably,
// applies it to the replica in order, and acknowledges only what is applied and fsync'd.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { didYouMean, resolveFrom } from '../common/config.js';
import { DaemonShell } from '../common/daemon-shell.js';
import { tmError, wrap } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { trustPaths } from '../common/peer-trust.js';
import { masterTargetMetrics } from './metrics.js';
import { FramedConnection } from '../proto/connection.js';
import type { Diff, ExtentRecord } from '../proto/hrl.js';
import type { DiffBegin, HashAnswer, HashQuery, OpenVolume } from '../proto/messages.js';
import { DiffReceiver, type InboundSink, type Peer, type ResyncRequest, type Transformed } from '../proto/receiver.js';
import type { MtConfig } from './config.js';
import { recoverPoint, type RecoverProgress, type RecoverySource } from './recover.js';
import { MtVolume } from './volume.js';
import { TestFailovers } from './test-failover.js';
import { operatorAction } from './operator-actions.js';
import { SpaceWatch, type WatchedDir } from './space-watch.js';

export class MasterTarget implements InboundSink {
  readonly targets = new Map<string, MtVolume>();
  receiver!: DiffReceiver;
  /** Identity, state lock, listener, status and operator endpoints, and their closing (common/daemon-shell.ts). */
  private readonly shell: DaemonShell<FramedConnection>;
  private retry: NodeJS.Timeout | null = null;
  testFailovers!: TestFailovers;
  /** Free space of every filesystem written to, measured on a timer (master-target/space-watch.ts). */
  space: SpaceWatch | null = null;
  port = 0;

  constructor(readonly config: MtConfig, private readonly log: Logger) {
    this.shell = new DaemonShell('master-target', log);
  }

  async open(): Promise<void> {
    const cfg = this.config;
    const metrics = masterTargetMetrics(this.log, () => this.snapshot());
    const p = (x: string): string => resolveFrom(cfg.configDir, x);
    // Before anything reads the state: a second master target would run start-up recovery on live staging.
    await this.shell.start({ trust: trustPaths(cfg.tls, p), certPath: cfg.tls.cert, stateDir: p(cfg.stateDir) });
    this.receiver = new DiffReceiver(this, cfg.name, this.log.child({ component: 'receiver' }), cfg.maxDiffBytes);
    this.space = new SpaceWatch(await watchedDirs(cfg, p), cfg.space, this.log.child({ component: 'space' }), cfg.space.checkIntervalMs);
    this.space.open();
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
    const port = await this.shell.listen({
      listen: cfg.listen, connections: cfg.connections, allowed: ['process-server'],
      serve: (socket, peer) => {
        const conn = new FramedConnection(socket, peer.name);
        return { session: conn, done: this.receiver.serve(conn, peer) };
      },
    });
    this.port = port;
    this.retry = setInterval(() => {
      this.kickAll();
      void this.checkReplicas();
    }, 2000);
    this.testFailovers = new TestFailovers(path.join(p(cfg.stateDir), 'test-failover'));
    const statusPort = await this.shell.serveStatus(cfg.statusPort, () => this.snapshot(), metrics);
    await this.shell.serveOperators((action, params) => operatorAction(this, action, params), cfg.operatorListen, { status: () => this.snapshot(), metrics });
    this.log.info({ port, statusPort }, 'master target started');
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
      space: this.space?.status() ?? null,
      recoveries: [...this.recoveries.values()],
      volumes: [...this.targets.values()].map((t) => t.status()),
    };
  }

  /** Stop (idempotent): the shell first takes no new operator action and closes the listener, then this. */
  close(): Promise<void> {
    if (this.retry) clearInterval(this.retry);
    return this.shell.close(async () => {
      this.space?.close();
      for (const t of this.targets.values()) await t.close();
    });
  }
}

/** Where the master target writes: its state directory, each file replica's directory, each snapshot directory. */
async function watchedDirs(cfg: MtConfig, p: (x: string) => string): Promise<WatchedDir[]> {
  const dirs: WatchedDir[] = [{ dir: p(cfg.stateDir), holds: 'state (staging, retention)' }];
  for (const v of cfg.volumes) {
    const replica = p(v.replica);
    // A block device replica has no filesystem of ours to fill.
    const isDevice = await fsp.stat(replica).then((s) => s.isBlockDevice(), () => false);
    if (!isDevice) dirs.push({ dir: path.dirname(replica), holds: `replica of ${v.id}` });
    if (v.snapshots) dirs.push({ dir: p(v.snapshots.dir), holds: `snapshots of ${v.id}` });
  }
  return dirs;
}
