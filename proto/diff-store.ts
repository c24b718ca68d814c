// A receiver's durable store for one volume: the .hrl files received and not yet done with (forwarded
// by the process server, applied by the master target), plus the volume's state file. Both the process
// server's cache and the master target's staging area are DiffStores.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { ensureDir, removeTempFiles, writeFileDurable } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { hrlName, listDiffs, loadHrl, type Diff, type StoredDiff } from './hrl.js';
import { RecentDiffs } from './recent-diffs.js';
import type { OpenVolume } from './messages.js';

export interface StoreState {
  replicationId: string;
  sizeBytes: number;
  blockSize: number;
  /** Every differential up to here is done with (forwarded and acked downstream, or applied). */
  doneSeq: number;
  /** Master target: a resync is under way, so the replica is not at a consistent point. */
  resyncing?: boolean;
  /** Master target: the latest recovery point of each class applied to the replica. */
  lastCrashPoint?: RecoveryPoint;
  lastAppPoint?: RecoveryPoint;
}

/** A differential whose application left the replica at a crash- or app-consistent point. */
export interface RecoveryPoint {
  seq: number;
  /** The capture instant on the source (ms since the epoch). */
  atMs: number;
  consistency: 'CRASH' | 'APP';
  tags: string[];
  appliedAt: number;
}

export class DiffStore {
  state: StoreState | null = null;
  private seqs: number[] = [];
  private sizes = new Map<number, number>();
  private readonly recent = new RecentDiffs();
  bytes = 0;
  private readonly stateFile: string;

  constructor(readonly dir: string, readonly volumeId: string, private readonly log: Logger) {
    this.stateFile = path.join(dir, 'state.json');
  }

  async open(): Promise<void> {
    await ensureDir(this.dir);
    await removeTempFiles(this.dir);
    try {
      this.state = JSON.parse(await fsp.readFile(this.stateFile, 'utf8')) as StoreState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw tmError('TM_ERR_STATE_CORRUPT', `${this.stateFile}: ${(e as Error).message}`, { path: this.stateFile });
    }
    const done = this.state?.doneSeq ?? 0;
    for (const seq of await listDiffs(this.dir)) {
      if (seq <= done) await fsp.rm(this.file(seq), { force: true }); // done before a crash, not yet deleted
      else this.track(seq, (await fsp.stat(this.file(seq))).size);
    }
  }

  /** Check an OpenVolume against what we hold, or adopt it for a volume seen for the first time. */
  async adopt(ov: OpenVolume, initial: Partial<StoreState> = {}): Promise<void> {
    const s = this.state;
    if (s === null) {
      this.state = { replicationId: ov.replicationId, sizeBytes: ov.sizeBytes, blockSize: ov.blockSize, doneSeq: 0, ...initial };
      await writeFileDurable(this.stateFile, JSON.stringify(this.state));
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

  file(seq: number): string {
    return path.join(this.dir, hrlName(seq));
  }

  get doneSeq(): number {
    return this.state?.doneSeq ?? 0;
  }

  get storedSeq(): number {
    return Math.max(this.doneSeq, this.seqs.at(-1) ?? 0);
  }

  pending(): number[] {
    return this.seqs;
  }

  /** A differential was committed here; `diff` is its content as written, if the writer kept it. */
  async added(seq: number, diff: Diff | null = null): Promise<void> {
    this.track(seq, (await fsp.stat(this.file(seq))).size);
    this.recent.remember(seq, diff);
  }

  /** A stored differential: from memory when just received, else verified on disk (read whole if small). */
  load(seq: number): Promise<StoredDiff> {
    const kept = this.recent.get(seq);
    return kept ? Promise.resolve(kept) : loadHrl(this.file(seq));
  }

  private track(seq: number, size: number): void {
    this.seqs.push(seq);
    this.sizes.set(seq, size);
    this.bytes += size;
  }

  /** Record durably that everything up to `seq` is done, then delete those files. */
  async done(seq: number, also: Partial<StoreState> = {}): Promise<void> {
    if (this.state === null || seq <= this.state.doneSeq) return;
    this.state = { ...this.state, ...also, doneSeq: seq };
    await writeFileDurable(this.stateFile, JSON.stringify(this.state));
    this.recent.forgetThrough(seq);
    while (this.seqs.length > 0 && this.seqs[0]! <= seq) {
      const s = this.seqs.shift()!;
      this.bytes -= this.sizes.get(s) ?? 0;
      this.sizes.delete(s);
      await fsp.rm(this.file(s), { force: true });
    }
  }

  /** Forget received files from `seq` on (they were found damaged); the sender will send them again. */
  async discardFrom(seq: number): Promise<void> {
    this.recent.forgetFrom(seq);
    const keep = this.seqs.filter((s) => s < seq);
    for (const s of this.seqs.filter((x) => x >= seq)) {
      this.bytes -= this.sizes.get(s) ?? 0;
      this.sizes.delete(s);
      await fsp.rm(this.file(s), { force: true });
    }
    this.seqs = keep;
  }
}
