// The agent's change journal for one volume: committed .hrl files waiting for the process server's ack,
// and the volume's replication state (replication id, highest acknowledged sequence, and the generation
// history that lets the process server tell a continuation of this state from a rolled-back copy).
// The files and their bookkeeping are a DurableQueue (proto/durable-queue.ts), shared with the receivers.
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { ensureDir, writeFileDurable } from '../common/durable.js';
import { tmError, isTidemarkError, type TidemarkError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { DurableQueue, readStateJson } from '../proto/durable-queue.js';
import { HrlWriter, decodeHeader, decodeHrl, salvageRanges, type Diff, type DiffHeader } from '../proto/hrl.js';
import { detach, withFileBytes } from '../proto/hrl-read.js';
import type { DirtyExtent } from './trackers/tracker.js';

/** Version of state.json written now; a newer one is refused (docs/FORMAT.md §4). */
export const AGENT_STATE_VERSION = 2;
/** Kept inside journal/: its absence beside an existing state.json means the journal was lost. */
const JOURNAL_MARKER = 'journal.id';

export interface VolumeState {
  version: number;
  replicationId: string;
  ackedSeq: number;
  sizeBytes: number;
  blockSize: number;
  /**
   * Random 128-bit id of this state's current session, and the one it continues. A new generation is
   * taken at each session once the receiver confirmed the current one, so a restored older copy presents
   * a parent the receiver has moved past (docs/PROTOCOL.md "Regression").
   */
  generation: string;
  parentGeneration: string;
  /** The highest sequence journaled when `generation` was taken: the receiver cannot hold more from its parent. */
  baseSeq: number;
  /** The receiver accepted `generation` (VolumeState or ResyncNeeded received). */
  confirmed: boolean;
}

/** What OpenVolume says of the journal's history. */
export interface Lineage {
  generation: string;
  parentGeneration: string;
  baseSeq: number;
  lastSeq: number;
}

const newGeneration = (): string => randomBytes(16).toString('hex');

/** What to do when a journal file turns out damaged: the ranges to re-read, or null for "all". */
export type RepairHook = (ranges: { offset: number; length: number }[] | null) => Promise<void>;

export class Journal {
  readonly dir: string;
  private readonly stateFile: string;
  state!: VolumeState;
  private readonly files: DurableQueue;
  /** Why the journal's files were lost (journal/ deleted while state.json remained), or null. */
  lost: string | null = null;
  /** Serialises writes with a rebase, which renumbers from under them. */
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * `recentBytes`: differentials just written kept in memory for the uploader (proto/recent-diffs.ts); the
   * agent keeps two of its largest, so one journaled while the one before waits for the uploader is not read back.
   */
  constructor(volumeDir: string, readonly volumeId: string, private readonly log: Logger, recentBytes?: number) {
    this.dir = path.join(volumeDir, 'journal');
    this.stateFile = path.join(volumeDir, 'state.json');
    this.files = new DurableQueue(this.dir, recentBytes);
  }

  /** Bytes on disk of the differentials not yet acknowledged. */
  get bytes(): number {
    return this.files.bytes;
  }

  async open(geometry: { sizeBytes: number; blockSize: number }): Promise<void> {
    const marker = path.join(this.dir, JOURNAL_MARKER);
    const hadMarker = await fsp.stat(marker).then(() => true, () => false);
    const removed = await this.files.open(async () => {
      const { state, fresh, upgraded } = await this.readState(geometry);
      this.state = state;
      // Pending differentials were deleted with the journal: their blocks reached nobody, only a resync finds them.
      if (!fresh && !upgraded && !hadMarker) this.lost = `the journal directory ${this.dir} was lost or emptied while its state remained`;
      if (!hadMarker && !this.lost) await this.markIntact();
      return this.state.ackedSeq;
    });
    if (removed > 0) this.log.info({ removed }, 'removed unfinished journal files left by a crash');
  }

  private async readState(geometry: { sizeBytes: number; blockSize: number }): Promise<{ state: VolumeState; fresh: boolean; upgraded: boolean }> {
    let state = await readStateJson<VolumeState>(this.stateFile, AGENT_STATE_VERSION, 'this agent');
    if (state === null) {
      state = { version: AGENT_STATE_VERSION, replicationId: randomUUID(), ackedSeq: 0, ...geometry, generation: newGeneration(), parentGeneration: '', baseSeq: 0, confirmed: false };
      await writeFileDurable(this.stateFile, JSON.stringify(state));
      return { state, fresh: true, upgraded: false };
    }
    const version = state.version ?? 1;
    const upgraded = version < AGENT_STATE_VERSION;
    // Version 1 kept no history: start one, as a continuation of whatever the receiver holds up to ackedSeq.
    if (upgraded) state = { ...state, version: AGENT_STATE_VERSION, generation: newGeneration(), parentGeneration: '', baseSeq: state.ackedSeq, confirmed: false };
    if (state.sizeBytes !== geometry.sizeBytes || state.blockSize !== geometry.blockSize) {
      throw tmError('TM_ERR_VOLUME_GEOMETRY', `volume ${this.volumeId} is ${geometry.sizeBytes} bytes in ${geometry.blockSize}-byte blocks, but was replicated as ${state.sizeBytes} in ${state.blockSize}`, { volume: this.volumeId });
    }
    if (upgraded) await writeFileDurable(this.stateFile, JSON.stringify(state));
    return { state, fresh: false, upgraded };
  }

  /** The journal directory is whole again (after a loss, once the resync that covers it is durably started). */
  async markIntact(): Promise<void> {
    await writeFileDurable(path.join(this.dir, JOURNAL_MARKER), this.state.replicationId);
    this.lost = null;
  }

  private saveState(): Promise<void> {
    return writeFileDurable(this.stateFile, JSON.stringify(this.state));
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /**
   * The history to present in OpenVolume. Once the receiver confirmed the current generation, a new one
   * is taken (durably, before it is presented) continuing it from everything journaled so far.
   */
  session(): Promise<Lineage> {
    return this.locked(async () => {
      if (this.state.confirmed) {
        this.state = { ...this.state, parentGeneration: this.state.generation, generation: newGeneration(), baseSeq: this.lastSeq, confirmed: false };
        await this.saveState();
      }
      const { generation, parentGeneration, baseSeq } = this.state;
      return { generation, parentGeneration, baseSeq, lastSeq: this.lastSeq };
    });
  }

  /** The receiver accepted the generation presented: the next session continues from it. */
  async confirm(): Promise<void> {
    if (this.state.confirmed) return;
    this.state = { ...this.state, confirmed: true };
    await this.saveState();
  }

  /**
   * The receiver holds a history this journal is not a continuation of (everything <= durableSeq is durable
   * there, partly from another timeline). The caller has durably started a resync, which re-reads every
   * block from the volume: the files journaled here are set aside in superseded/ (replacing an earlier set),
   * never acknowledged, and numbering goes on from durableSeq + 1.
   */
  rebase(durableSeq: number): Promise<number> {
    return this.locked(async () => {
      const aside = path.join(path.dirname(this.dir), 'superseded');
      await fsp.rm(aside, { recursive: true, force: true });
      await ensureDir(aside);
      const moved = await this.files.moveAll(aside);
      this.state = { ...this.state, ackedSeq: durableSeq, confirmed: true };
      await this.saveState();
      return moved;
    });
  }

  file(seq: number): string {
    return this.files.file(seq);
  }

  get nextSeq(): number {
    return Math.max(this.state.ackedSeq, this.files.last) + 1;
  }

  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  pending(): number[] {
    return this.files.pending();
  }

  /** Write a differential durably (tmp, fsync, rename, fsync dir) and return its sequence number. */
  write(h: Omit<DiffHeader, 'seq' | 'volumeId' | 'volumeSize' | 'blockSize'>, extents: DirtyExtent[]): Promise<number> {
    return this.locked(() => this.writeNow(h, extents));
  }

  private async writeNow(h: Omit<DiffHeader, 'seq' | 'volumeId' | 'volumeSize' | 'blockSize'>, extents: DirtyExtent[]): Promise<number> {
    const seq = this.nextSeq;
    const w = await HrlWriter.create(this.dir, { ...h, seq, volumeId: this.volumeId, volumeSize: this.state.sizeBytes, blockSize: this.state.blockSize }, { keep: true });
    try {
      for (const e of extents) {
        // The extent's crc was taken from these bytes where they were read: the file crc is combined from it.
        await w.append({ offset: e.offset, length: e.length, crc32c: e.crc32c, compression: 'NONE', storedLength: e.data.length }, e.data, e.crc32c);
      }
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
    await this.files.added(seq, w.diff());
    return seq;
  }

  /**
   * Read a differential to upload. A damaged file is reported (TM_ERR_HRL_*), its ranges handed to
   * `repair` so the tracker re-reads them from the volume, and replaced by an empty differential of the
   * same sequence number, so the sequence stays gap-free and nothing corrupt leaves this machine.
   */
  async load(seq: number, repair: RepairHook): Promise<Diff> {
    const kept = this.files.kept(seq);
    if (kept) return kept;
    const file = this.file(seq);
    // Verified in the read buffer (proto/hrl-read.ts), and only what the repair needs taken out of it.
    type Read = { diff: Diff } | { diff: null; damaged: TidemarkError; ranges: ReturnType<typeof salvageRanges>; flags: number };
    const read = await withFileBytes(file, (buf): Read => {
      try {
        const diff = decodeHrl(buf, file);
        for (const e of diff.extents) {
          if (crc(e.data) !== e.crc32c) throw tmError('TM_ERR_HRL_CORRUPT', `${file}: extent at ${e.offset} does not match its checksum`, { path: file, seq });
        }
        return { diff: detach(diff) };
      } catch (e) {
        if (!isTidemarkError(e) || !e.code.startsWith('TM_ERR_HRL_') || e.code === 'TM_ERR_HRL_VERSION') throw e;
        // Keep what the header said (a resync end marker, say) when the header itself is intact.
        let flags = 0;
        try {
          flags = decodeHeader(buf).flags;
        } catch {
          /* header damaged too: a resync was started, which ends with its own marker */
        }
        return { diff: null, damaged: e, ranges: salvageRanges(buf), flags };
      }
    });
    if (read.diff) return read.diff;
    const { damaged, ranges, flags } = read;
    this.log.error({ code: damaged.code, seq, err: damaged.message, reread: ranges === null ? 'all' : ranges.length }, 'damaged journal file; re-reading its blocks from the volume');
    await repair(ranges);
    return this.files.standIn(seq, { volumeId: this.volumeId, volumeSize: this.state.sizeBytes, blockSize: this.state.blockSize }, flags);
  }

  /**
   * The process server holds everything up to `seq` durably: record that, then delete those files. An
   * acknowledgement above what this journal ever wrote comes from another history: nothing is deleted.
   */
  async acked(seq: number): Promise<void> {
    if (seq <= this.state.ackedSeq) return;
    if (seq > this.lastSeq) {
      throw tmError('TM_ERR_SOURCE_REGRESSED', `volume ${this.volumeId}: acknowledged up to ${seq}, but this journal wrote only up to ${this.lastSeq}: the receiver holds another history`, { volume: this.volumeId, seq });
    }
    await this.files.doneThrough(seq, () => {
      this.state = { ...this.state, ackedSeq: seq };
      return this.saveState();
    });
  }
}
