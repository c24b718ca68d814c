// The process server's durable cache: receives differentials from agents (verifying each extent
// against its source checksum and compressing it), and hands them to the forwarder of the volume's
// master target, deleting each only after that master target acknowledged it.
import path from 'node:path';
import { didYouMean } from '../common/config.js';
import { TidemarkError, tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DiffStore } from '../proto/diff-store.js';
import { compressExtent, rawData } from '../proto/extent-codec.js';
import { FLAG_RESYNC, HrlWriter, type Diff, type ExtentRecord } from '../proto/hrl.js';
import type { HashAnswer, HashQuery, OpenVolume } from '../proto/messages.js';
import type { InboundSink, Peer } from '../proto/receiver.js';
import type { OutboundVolume } from '../proto/sender.js';
import type { PsConfig } from './config.js';

export interface CacheVolumeStats {
  rawBytesIn: number;
  storedBytesIn: number;
}

export class Cache implements InboundSink {
  readonly stores = new Map<string, DiffStore>();
  readonly stats = new Map<string, CacheVolumeStats>();
  /** Called when a volume has something new to forward. */
  onCommitted: (volumeId: string) => void = () => {};
  /** Called to acknowledge to the agent (wired to the receiver). */
  ack: (volumeId: string, seq: number) => void = () => {};
  /** Asks the volume's master target (wired to its forwarder). */
  relayQuery: (masterTarget: string, q: Omit<HashQuery, 'requestId'>, hashes: Buffer) => Promise<HashAnswer> = () => Promise.reject(new Error('no forwarder'));

  constructor(private readonly cfg: PsConfig, private readonly dir: string, private readonly log: Logger) {}

  async open(): Promise<void> {
    for (const v of this.cfg.volumes) {
      const store = new DiffStore(path.join(this.dir, v.id), v.id, this.log.child({ volume: v.id }));
      await store.open();
      this.stores.set(v.id, store);
      this.stats.set(v.id, { rawBytesIn: 0, storedBytesIn: 0 });
    }
  }

  private store(volumeId: string): DiffStore {
    const s = this.stores.get(volumeId);
    if (!s) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volumeId}" is not configured on this process server; ${didYouMean(volumeId, [...this.stores.keys()])}`, { volume: volumeId });
    return s;
  }

  // InboundSink (from agents)
  async openVolume(peer: Peer, ov: OpenVolume): Promise<{ dir: string }> {
    const store = this.store(ov.volumeId);
    const owner = this.cfg.volumes.find((v) => v.id === ov.volumeId)!.agent;
    if (owner !== peer.name) {
      throw tmError('TM_ERR_VOLUME_NOT_ASSIGNED', `agent "${peer.name}" may not send volume "${ov.volumeId}" (assigned to "${owner}")`, { volume: ov.volumeId, peer: peer.name });
    }
    await store.adopt(ov);
    return { dir: store.dir };
  }

  async transform(volumeId: string, seq: number, e: ExtentRecord, payload: Buffer): Promise<{ record: ExtentRecord; stored: Buffer }> {
    const raw = rawData(e, payload, volumeId, seq); // throws TM_ERR_EXTENT_CHECKSUM: nothing corrupt is cached
    const plain: ExtentRecord = { ...e, compression: 'NONE', storedLength: raw.length };
    return this.cfg.compression === 'lz4' ? compressExtent(plain, raw) : { record: plain, stored: raw };
  }

  async committed(volumeId: string, seq: number, info: { rawBytes: number; storedBytes: number; diff: Diff | null }): Promise<void> {
    await this.store(volumeId).added(seq, info.diff);
    const st = this.stats.get(volumeId)!;
    st.rawBytesIn += info.rawBytes;
    st.storedBytesIn += info.storedBytes;
    this.ack(volumeId, seq); // durable in the cache: the agent may delete its copy
    this.onCommitted(volumeId);
  }

  /** Resync questions go to the volume's master target, which holds the replica's hashes. */
  async answerQuery(q: HashQuery, hashes: Buffer): Promise<HashAnswer> {
    this.store(q.volumeId);
    const mt = this.cfg.volumes.find((v) => v.id === q.volumeId)!.masterTarget;
    const { requestId, ...rest } = q;
    const answer = await this.relayQuery(mt, rest, hashes);
    return { ...answer, requestId }; // a failure downstream was raised by relayQuery and is answered as one
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
  private async loadOrReplace(store: DiffStore, seq: number): Promise<Diff> {
    try {
      return await store.load(seq);
    } catch (e) {
      if (!(e instanceof TidemarkError) || e.errorClass !== 'corruption') throw e;
      this.log.error({ volume: store.volumeId, seq, code: e.code, err: e.message }, `damaged cached differential replaced; the replica needs a resync: run \`tidemark resync ${store.volumeId}\` on its agent`);
      const s = store.state!;
      const w = await HrlWriter.create(store.dir, { volumeId: store.volumeId, seq, startTimeMs: Date.now(), endTimeMs: Date.now(), volumeSize: s.sizeBytes, blockSize: s.blockSize, consistency: 'FUZZY', flags: FLAG_RESYNC, tags: [] }, { keep: true });
      await w.commit();
      return w.diff()!;
    }
  }

  /** The cached volumes routed to one master target, as the forwarder sees them. */
  outbound(masterTarget: string): OutboundVolume[] {
    return this.cfg.volumes.filter((v) => v.masterTarget === masterTarget).map((v) => {
      const store = this.store(v.id);
      return {
        volumeId: v.id,
        describe: () => (store.state ? { sizeBytes: store.state.sizeBytes, blockSize: store.state.blockSize, replicationId: store.state.replicationId } : null),
        pending: async () => store.pending(),
        load: (seq: number): Promise<Diff> => this.loadOrReplace(store, seq),
        acked: (seq: number) => store.done(seq),
      };
    });
  }
}
