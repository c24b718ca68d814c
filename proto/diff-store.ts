// A receiver's durable store for one volume: the .hrl files received and not yet done with (forwarded
// by the process server, applied by the master target), plus the volume's state file. Both the process
// server's cache and the master target's staging area are DiffStores. The files and their bookkeeping
// are a DurableQueue (durable-queue.ts), shared with the agent's journal.
import path from 'node:path';
import { unlinkDurable, writeFileDurable } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DurableQueue, readStateJson } from './durable-queue.js';
import { loadHrl, type Diff, type StoredDiff } from './hrl.js';
import type { OpenVolume } from './messages.js';

/** Version of state.json written now; a newer one is refused (docs/FORMAT.md §5). */
export const STORE_STATE_VERSION = 3;

/**
 * The state.json every receiver keeps for a volume. A receiver adds its own fields through DiffStore's
 * type parameter (the master target's: master-target/volume-state.ts); they are kept as given.
 */
export interface StoreState {
  version?: number;
  replicationId: string;
  sizeBytes: number;
  blockSize: number;
  /** Every differential up to here is done with (forwarded and acked downstream, or applied). */
  doneSeq: number;
  /** Process server: the sender's generation last accepted (docs/PROTOCOL.md "Regression"). */
  sourceGeneration?: string;
  /**
   * A resync the sender must be told to run, until it starts one. Process server: a damaged cached
   * differential. Master target: its replica was replaced (the replica stays \`resyncing\` until then).
   */
  resyncNeeded?: { reason: string; storedSeq: number };
}

export class DiffStore<X extends object = object> {
  state: (StoreState & X) | null = null;
  private readonly files: DurableQueue;
  private readonly stateFile: string;

  constructor(readonly dir: string, readonly volumeId: string, private readonly log: Logger) {
    this.stateFile = path.join(dir, 'state.json');
    this.files = new DurableQueue(dir);
  }

  async open(): Promise<void> {
    await this.files.open(async () => {
      this.state = await readStateJson<StoreState & X>(this.stateFile, STORE_STATE_VERSION, 'this Tidemark');
      return this.state?.doneSeq ?? 0;
    });
  }

  /** Bytes on disk of the differentials held. */
  get bytes(): number {
    return this.files.bytes;
  }

  /** Check an OpenVolume against what we hold, or adopt it for a volume seen for the first time. */
  async adopt(ov: OpenVolume, initial: Partial<StoreState & X> = {}): Promise<void> {
    const s = this.state;
    if (s === null) {
      this.state = { version: STORE_STATE_VERSION, replicationId: ov.replicationId, sizeBytes: ov.sizeBytes, blockSize: ov.blockSize, doneSeq: 0, ...initial } as StoreState & X;
      await this.save();
      this.log.info({ volume: this.volumeId, sizeBytes: ov.sizeBytes, blockSize: ov.blockSize }, 'new volume');
      return;
    }
    if (s.replicationId !== ov.replicationId) {
      throw tmError('TM_ERR_REPLICATION_MISMATCH', `volume ${this.volumeId} is already replicated from another source state (replication ${s.replicationId}, offered ${ov.replicationId})`, { volume: this.volumeId });
    }
    if (s.sizeBytes !== ov.sizeBytes || s.blockSize !== ov.blockSize) {
      throw tmError('TM_ERR_VOLUME_GEOMETRY', `volume ${this.volumeId} is ${s.sizeBytes} bytes in ${s.blockSize}-byte blocks here; offered ${ov.sizeBytes} in ${ov.blockSize}`, { volume: this.volumeId });
    }
  }

  /**
   * Is the sender's state a continuation of what we hold (docs/PROTOCOL.md "Regression")? Null if so (or
   * the sender keeps no history); else why not. A continuation presents the generation we last accepted,
   * or a new one whose parent it is, and began it with everything we hold already journaled.
   */
  regression(ov: OpenVolume): string | null {
    if (!ov.generation) return null;
    const known = this.state?.sourceGeneration;
    if (known && ov.generation !== known && ov.parentGeneration !== known) {
      return `the agent's state (generation ${ov.generation}, continuing ${ov.parentGeneration || 'nothing'}) does not continue the one this process server last accepted (${known}): restored from an older copy or recreated`;
    }
    if (this.storedSeq > (ov.baseSeq ?? 0)) {
      return `this process server holds differentials up to ${this.storedSeq}, but the agent's journal had only reached ${ov.baseSeq ?? 0}: its state was rolled back or its journal lost`;
    }
    return null;
  }

  /** Accept the sender's generation: the next must continue it. */
  async acceptSource(generation: string): Promise<void> {
    if (!this.state || !generation || this.state.sourceGeneration === generation) return;
    this.state = { ...this.state, version: STORE_STATE_VERSION, sourceGeneration: generation };
    await this.save();
  }

  /** Remember (durably) that the sender must run a resync; cleared by clearResyncNeeded. */
  async flagResync(reason: string, also: Partial<StoreState & X> = {}): Promise<void> {
    if (!this.state) return;
    this.state = { ...this.state, ...also, version: STORE_STATE_VERSION, resyncNeeded: { reason, storedSeq: this.storedSeq } };
    await this.save();
  }

  /** Record the receiver's own fields (`X`) durably, with everything else the state holds. */
  async update(also: Partial<StoreState & X>): Promise<void> {
    if (!this.state) return;
    this.state = { ...this.state, ...also, version: STORE_STATE_VERSION };
    await this.save();
  }

  /** A resync differential newer than the flag arrived: the sender has started one. */
  async clearResyncNeeded(seq: number): Promise<void> {
    const f = this.state?.resyncNeeded;
    if (!f || seq <= f.storedSeq) return;
    const { resyncNeeded: _, ...rest } = this.state!;
    this.state = rest as StoreState & X;
    await this.save();
  }

  private save(): Promise<void> {
    return writeFileDurable(this.stateFile, JSON.stringify(this.state));
  }

  file(seq: number): string {
    return this.files.file(seq);
  }

  get doneSeq(): number {
    return this.state?.doneSeq ?? 0;
  }

  get storedSeq(): number {
    return Math.max(this.doneSeq, this.files.last);
  }

  pending(): number[] {
    return this.files.pending();
  }

  /**
   * A differential was committed here; `diff` is its content as written, if the writer kept it. Only the
   * next sequence is taken: a file past a hole (committed after a discard) is deleted and refused, or the
   * hole would be read as "already held" and never filled.
   */
  async added(seq: number, diff: Diff | null = null): Promise<void> {
    if (seq !== this.storedSeq + 1) {
      await unlinkDurable(this.file(seq));
      throw tmError('TM_ERR_SEQUENCE_GAP', `volume ${this.volumeId}: differential ${seq} committed after ${this.storedSeq}: not taken`, { volume: this.volumeId, seq });
    }
    await this.files.added(seq, diff);
  }

  /** A stored differential: from memory when just received, else verified on disk (read whole if small). */
  load(seq: number): Promise<StoredDiff> {
    const kept = this.files.kept(seq);
    return kept ? Promise.resolve(kept) : loadHrl(this.file(seq));
  }

  /** Replace the damaged differential `seq` by an empty stand-in with `flags`, durably (DurableQueue.standIn); returns it. */
  standIn(seq: number, flags: number): Promise<Diff> {
    const s = this.state!;
    return this.files.standIn(seq, { volumeId: this.volumeId, volumeSize: s.sizeBytes, blockSize: s.blockSize }, flags);
  }

  /** Record durably that everything up to `seq` is done, then delete those files. */
  async done(seq: number, also: Partial<StoreState & X> = {}): Promise<void> {
    if (this.state === null || seq <= this.state.doneSeq) return;
    await this.files.doneThrough(seq, () => {
      this.state = { ...this.state!, ...also, doneSeq: seq };
      return this.save();
    });
  }

  /** Forget received files from `seq` on (they were found damaged); the sender will send them again. */
  discardFrom(seq: number): Promise<void> {
    return this.files.discardFrom(seq);
  }
}
