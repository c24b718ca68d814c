// The process server's durable cache: receives differentials from agents (verifying each extent
// against its source checksum and compressing it), and hands them to the forwarder of the volume's
// master target, deleting each only after that master target acknowledged it. Its quota, health and the
// backpressure they put on agents are watched by health.ts; compression is compressor.ts.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { didYouMean } from '../common/config.js';
import { tmError, isCorruption } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DiffStore } from '../proto/diff-store.js';
import { rawDataAsync, verifiedRaw } from '../proto/extent-codec.js';
import { FLAG_RESYNC, FLAG_RESYNC_END, type Diff, type ExtentRecord, type StoredDiff } from '../proto/hrl.js';
import type { DiffBegin, HashAnswer, HashQuery, OpenVolume } from '../proto/messages.js';
import type { FlowState, InboundSink, Peer, ResyncRequest, Transformed } from '../proto/receiver.js';
import type { OutboundVolume } from '../proto/sender.js';
import { Compressor, type CompressionStats } from './compressor.js';
import type { PsConfig } from './config.js';
import { CacheMonitor, type CacheStatus } from './health.js';
import { Routes } from './routes.js';

export interface CacheVolumeStats {
  rawBytesIn: number;
  storedBytesIn: number;
}

/** Per volume in the status snapshot, beside the store's own figures. */
export interface CacheVolumeStatus extends CacheVolumeStats {
  /** How long the oldest differential not yet acknowledged by the master target has been here (0: none). */
  backlogAgeMs: number;
  compression: CompressionStats;
}

/**
 * The cache's collaborators, given at construction: the agents' side (the receiver) and the master
 * targets' side (the forwarders). Volumes are named; where they go is the wiring's business (Routes).
 */
export interface CacheLinks {
  /** Acknowledge to the volume's agent: the differential is durable here, it may delete its copy. */
  ack(volumeId: string, seq: number): void;
  /** Ask the volume's agent to resync, if connected; false if it was not told. */
  requestResync(volumeId: string, reason: string): Promise<boolean>;
  /** The cache's flow state changed: slow down or hold back the agents. */
  setFlow(flow: FlowState): void;
  /** Is the volume's master target taking its differentials? */
  draining(volumeId: string): boolean;
  /** The volume has something new to forward. */
  committed(volumeId: string): void;
  /** Ask the volume's master target, which holds the replica's hashes. */
  query(volumeId: string, q: Omit<HashQuery, 'requestId'>, hashes: Buffer): Promise<HashAnswer>;
}

/** A cache on its own (tools and tests): nobody to tell, nothing downstream to ask. */
export const UNLINKED: CacheLinks = {
  ack: () => {},
  requestResync: async () => false,
  setFlow: () => {},
  draining: () => true,
  committed: () => {},
  query: (volumeId) => Promise.reject(tmError('TM_ERR_CONNECTION', `volume ${volumeId}: no master target linked`, { volume: volumeId })),
};

export class Cache implements InboundSink {
  readonly stores = new Map<string, DiffStore>();
  readonly stats = new Map<string, CacheVolumeStats>();
  readonly compressor: Compressor;
  readonly monitor: CacheMonitor;
  /** When each cached differential arrived, per volume (from the file's mtime after a restart). */
  private readonly arrived = new Map<string, Map<number, number>>();
  private readonly routes: Routes;

  constructor(private readonly cfg: PsConfig, private readonly dir: string, private readonly log: Logger, private readonly links: CacheLinks = UNLINKED) {
    this.routes = new Routes(cfg.volumes);
    this.compressor = new Compressor(cfg.compression, { minSavingPercent: cfg.compressionMinSavingPercent });
    this.monitor = new CacheMonitor(cfg.cache, dir, {
      usedBytes: () => [...this.stores.values()].reduce((n, s) => n + s.bytes, 0),
      backlogAges: () => new Map([...this.stores.keys()].map((v) => [v, this.backlogAge(v)])),
      volumes: () => [...this.stores.values()].map((st) => ({ id: st.volumeId, bytes: st.bytes, draining: links.draining(st.volumeId) })),
    }, log, (f) => links.setFlow(f));
  }

  async open(): Promise<void> {
    for (const v of this.cfg.volumes) {
      const store = new DiffStore(path.join(this.dir, v.id), v.id, this.log.child({ volume: v.id }));
      await store.open();
      this.stores.set(v.id, store);
      this.stats.set(v.id, { rawBytesIn: 0, storedBytesIn: 0 });
      const arrived = new Map<number, number>();
      for (const seq of store.pending()) arrived.set(seq, (await fsp.stat(store.file(seq))).mtimeMs);
      this.arrived.set(v.id, arrived);
    }
    await this.monitor.open();
    this.links.setFlow(this.monitor.flow); // the agents start under the flow the cache is in now
  }

  async close(): Promise<void> {
    await this.monitor.close();
  }

  status(): CacheStatus {
    return this.monitor.status();
  }

  volumeStatus(volumeId: string): CacheVolumeStatus {
    return { ...this.stats.get(volumeId)!, backlogAgeMs: this.backlogAge(volumeId), compression: this.compressor.stats(volumeId) };
  }

  private backlogAge(volumeId: string): number {
    const first = this.stores.get(volumeId)?.pending()[0];
    const at = first === undefined ? undefined : this.arrived.get(volumeId)?.get(first);
    return at === undefined ? 0 : Math.max(0, Date.now() - at);
  }

  private store(volumeId: string): DiffStore {
    const s = this.stores.get(volumeId);
    if (!s) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volumeId}" is not configured on this process server; ${didYouMean(volumeId, [...this.stores.keys()])}`, { volume: volumeId });
    return s;
  }

  // InboundSink (from agents)
  async openVolume(peer: Peer, ov: OpenVolume): Promise<{ dir: string; resync?: ResyncRequest }> {
    // The agent learns only that this volume is not served to it (not whether it exists, nor which do);
    // the log keeps the detail for the operator.
    const store = this.stores.get(ov.volumeId);
    const owner = this.cfg.volumes.find((v) => v.id === ov.volumeId)?.agent;
    if (!store || owner !== peer.name) {
      const detail = store
        ? `volume "${ov.volumeId}" is assigned to agent "${owner}"`
        : `volume "${ov.volumeId}" is not configured on this process server; ${didYouMean(ov.volumeId, [...this.stores.keys()])}`;
      throw tmError('TM_ERR_VOLUME_NOT_ASSIGNED', `volume "${ov.volumeId}" is not served to "${peer.name}" here`, { volume: ov.volumeId, peer: peer.name, detail });
    }
    await store.adopt(ov);
    // Sequence numbers from a state that does not continue ours would be acknowledged as ours: the agent
    // would delete what it never sent. It renumbers after ours and resyncs instead (docs/PROTOCOL.md).
    const regression = store.regression(ov);
    const capable = peer.capabilities?.includes('resync-needed') ?? false;
    if (regression) {
      this.log.error({ volume: ov.volumeId, code: 'TM_ERR_SOURCE_REGRESSED', storedSeq: store.storedSeq, generation: ov.generation, baseSeq: ov.baseSeq, lastSeq: ov.lastSeq, err: regression }, 'agent state regressed; asking it to resync');
      if (!capable) throw tmError('TM_ERR_SOURCE_REGRESSED', `volume ${ov.volumeId}: ${regression}; this agent is too old to resync by itself: upgrade it`, { volume: ov.volumeId });
    }
    if (ov.generation && capable) await store.acceptSource(ov.generation);
    if (regression) return { dir: store.dir, resync: { reason: regression, regression: true } };
    const flagged = store.state?.resyncNeeded;
    return { dir: store.dir, resync: flagged && capable ? { reason: flagged.reason, regression: false } : undefined };
  }

  async transform(volumeId: string, seq: number, e: ExtentRecord, payload: Buffer, payloadCrc: number): Promise<Transformed> {
    // Throws TM_ERR_EXTENT_CHECKSUM: nothing corrupt is cached. A raw extent is verified with the crc its
    // frame's check computed from these bytes (not read again); an LZ4 one is decompressed and checked.
    const raw = e.compression === 'NONE' ? verifiedRaw(e, payload, payloadCrc, volumeId, seq) : await rawDataAsync(e, payload, volumeId, seq);
    const out = await this.compressor.pack(volumeId, e, raw);
    // Stored raw: its crc is the extent's, just verified. Compressed: computed once, over the smaller bytes.
    return { ...out, storedCrc: out.stored === raw ? e.crc32c : crc(out.stored) };
  }

  async committed(volumeId: string, seq: number, info: { rawBytes: number; storedBytes: number; begin: DiffBegin; diff: Diff | null }): Promise<void> {
    const store = this.store(volumeId);
    await store.added(seq, info.diff);
    if (info.begin.flags & (FLAG_RESYNC | FLAG_RESYNC_END)) await store.clearResyncNeeded(seq);
    this.arrived.get(volumeId)?.set(seq, Date.now());
    this.monitor.update(); // may slow or stop agents before the next differential
    const st = this.stats.get(volumeId)!;
    st.rawBytesIn += info.rawBytes;
    st.storedBytesIn += info.storedBytes;
    this.links.ack(volumeId, seq); // durable in the cache: the agent may delete its copy
    this.links.committed(volumeId);
  }

  /** Resync questions go to the volume's master target, which holds the replica's hashes. */
  async answerQuery(q: HashQuery, hashes: Buffer): Promise<HashAnswer> {
    this.store(q.volumeId);
    const { requestId, ...rest } = q;
    const answer = await this.links.query(q.volumeId, rest, hashes);
    return { ...answer, requestId }; // a failure downstream was raised by the query and is answered as one
  }

  storedSeq(volumeId: string): number {
    return this.store(volumeId).storedSeq;
  }

  ackedSeq(volumeId: string): number {
    return this.store(volumeId).storedSeq;
  }

  geometryOf(volumeId: string): { volumeSize: number; blockSize: number } {
    const s = this.store(volumeId).state;
    return { volumeSize: s?.sizeBytes ?? 0, blockSize: s?.blockSize ?? 0 };
  }

  /**
   * A cached differential, or, when its file is damaged, an empty one of the same sequence flagged
   * FLAG_RESYNC. Its data are gone here and the agent deleted its copy on our ack, so only a resync can
   * restore them: the stand-in keeps the sequence gap-free (other volumes keep flowing) and has the master
   * target mark the replica inconsistent until a resync ends.
   */
  private async loadOrReplace(store: DiffStore, seq: number): Promise<StoredDiff> {
    try {
      return await store.load(seq);
    } catch (e) {
      if (!isCorruption(e)) throw e;
      this.log.error({ volume: store.volumeId, seq, code: e.code, err: e.message }, 'damaged cached differential replaced; asking the agent to resync the volume');
      const standIn = await store.standIn(seq, FLAG_RESYNC);
      // Durably first: an agent not connected now is told at its next OpenVolume, until it starts one.
      const reason = `process server ${this.cfg.name}: cached differential ${seq} was damaged (${e.code})`;
      await store.flagResync(reason);
      const told = await this.links.requestResync(store.volumeId, reason).catch(() => false);
      this.log.warn({ volume: store.volumeId, seq, told }, told ? 'agent asked to resync' : 'agent will be asked to resync when it connects');
      return standIn;
    }
  }

  /** The cached volumes routed to one master target, as the forwarder sees them. */
  outbound(masterTarget: string): OutboundVolume[] {
    return this.routes.volumesOf(masterTarget).map((volumeId) => {
      const store = this.store(volumeId);
      return {
        volumeId,
        describe: () => (store.state ? { sizeBytes: store.state.sizeBytes, blockSize: store.state.blockSize, replicationId: store.state.replicationId } : null),
        pending: async () => store.pending(),
        load: (seq: number): Promise<StoredDiff> => this.loadOrReplace(store, seq),
        // The master target lost what its replica held (replaced under its path): only the agent can resync
        // it. Flagged durably first, so an agent not connected now is told at its next OpenVolume.
        resyncNeeded: async (reason: string) => {
          await store.flagResync(reason);
          const told = await this.links.requestResync(volumeId, reason).catch(() => false);
          this.log.warn({ volume: volumeId, told, reason }, told ? 'master target needs a resync; agent asked' : 'master target needs a resync; agent will be asked when it connects');
        },
        acked: async (seq: number) => {
          await store.done(seq);
          const arrived = this.arrived.get(volumeId)!;
          for (const s of arrived.keys()) if (s <= seq) arrived.delete(s);
          this.monitor.update(); // room again: may let agents resume
        },
      };
    });
  }
}
