// The agent's change journal for one volume: committed .hrl files waiting for the process server's ack,
// and the volume's replication state (replication id, highest acknowledged sequence).
import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { ensureDir, removeTempFiles, unlinkDurable, writeFileDurable } from '../common/durable.js';
import { tmError, TidemarkError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { HrlWriter, decodeHeader, decodeHrl, hrlName, listDiffs, salvageRanges, type Diff, type DiffHeader } from '../proto/hrl.js';
import { RecentDiffs } from '../proto/recent-diffs.js';
import type { DirtyExtent } from './trackers/tracker.js';

export interface VolumeState {
  replicationId: string;
  ackedSeq: number;
  sizeBytes: number;
  blockSize: number;
}

/** What to do when a journal file turns out damaged: the ranges to re-read, or null for "all". */
export type RepairHook = (ranges: { offset: number; length: number }[] | null) => Promise<void>;

export class Journal {
  readonly dir: string;
  private readonly stateFile: string;
  state!: VolumeState;
  private seqs: number[] = [];
  private sizes = new Map<number, number>();
  private readonly recent = new RecentDiffs();
  bytes = 0;

  constructor(volumeDir: string, readonly volumeId: string, private readonly log: Logger) {
    this.dir = path.join(volumeDir, 'journal');
    this.stateFile = path.join(volumeDir, 'state.json');
  }

  async open(geometry: { sizeBytes: number; blockSize: number }): Promise<void> {
    await ensureDir(this.dir);
    const removed = await removeTempFiles(this.dir);
    if (removed > 0) this.log.info({ removed }, 'removed unfinished journal files left by a crash');
    this.state = await this.readState(geometry);
    for (const seq of await listDiffs(this.dir)) {
      if (seq <= this.state.ackedSeq) {
        await unlinkDurable(this.file(seq)); // acked before a crash, not yet deleted
        continue;
      }
      const { size } = await fsp.stat(this.file(seq));
      this.seqs.push(seq);
      this.sizes.set(seq, size);
      this.bytes += size;
    }
  }

  private async readState(geometry: { sizeBytes: number; blockSize: number }): Promise<VolumeState> {
    let state: VolumeState;
    try {
      state = JSON.parse(await fsp.readFile(this.stateFile, 'utf8')) as VolumeState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw tmError('TM_ERR_STATE_CORRUPT', `${this.stateFile}: ${(e as Error).message}`, { path: this.stateFile });
      state = { replicationId: randomUUID(), ackedSeq: 0, ...geometry };
      await writeFileDurable(this.stateFile, JSON.stringify(state));
      return state;
    }
    if (state.sizeBytes !== geometry.sizeBytes || state.blockSize !== geometry.blockSize) {
      throw tmError('TM_ERR_VOLUME_GEOMETRY', `volume ${this.volumeId} is ${geometry.sizeBytes} bytes in ${geometry.blockSize}-byte blocks, but was replicated as ${state.sizeBytes} in ${state.blockSize}`, { volume: this.volumeId });
    }
    return state;
  }

  file(seq: number): string {
    return path.join(this.dir, hrlName(seq));
  }

  get nextSeq(): number {
    return Math.max(this.state.ackedSeq, this.seqs.at(-1) ?? 0) + 1;
  }

  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  pending(): number[] {
    return this.seqs;
  }

  /** Write a differential durably (tmp, fsync, rename, fsync dir) and return its sequence number. */
  async write(h: Omit<DiffHeader, 'seq' | 'volumeId' | 'volumeSize' | 'blockSize'>, extents: DirtyExtent[]): Promise<number> {
    const seq = this.nextSeq;
    const w = await HrlWriter.create(this.dir, { ...h, seq, volumeId: this.volumeId, volumeSize: this.state.sizeBytes, blockSize: this.state.blockSize }, { keep: true });
    try {
      for (const e of extents) {
        await w.append({ offset: e.offset, length: e.length, crc32c: e.crc32c, compression: 'NONE', storedLength: e.data.length }, e.data);
      }
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
    this.recent.remember(seq, w.diff());
    const { size } = await fsp.stat(this.file(seq));
    this.seqs.push(seq);
    this.sizes.set(seq, size);
    this.bytes += size;
    return seq;
  }

  /**
   * Read a differential to upload. A damaged file is reported (TM_ERR_HRL_*), its ranges handed to
   * `repair` so the tracker re-reads them from the volume, and replaced by an empty differential of the
   * same sequence number, so the sequence stays gap-free and nothing corrupt leaves this machine.
   */
  async load(seq: number, repair: RepairHook): Promise<Diff> {
    const kept = this.recent.get(seq);
    if (kept) return kept;
    const buf = await fsp.readFile(this.file(seq));
    try {
      const diff = decodeHrl(buf, this.file(seq));
      for (const e of diff.extents) {
        if (crc(e.data) !== e.crc32c) throw tmError('TM_ERR_HRL_CORRUPT', `${this.file(seq)}: extent at ${e.offset} does not match its checksum`, { path: this.file(seq), seq });
      }
      return diff;
    } catch (e) {
      if (!(e instanceof TidemarkError) || !e.code.startsWith('TM_ERR_HRL_') || e.code === 'TM_ERR_HRL_VERSION') throw e;
      const ranges = salvageRanges(buf);
      this.log.error({ code: e.code, seq, err: e.message, reread: ranges === null ? 'all' : ranges.length }, 'damaged journal file; re-reading its blocks from the volume');
      await repair(ranges);
      // Keep what the header said (a resync end marker, say) when the header itself is intact.
      let flags = 0;
      try {
        flags = decodeHeader(buf).flags;
      } catch {
        /* header damaged too: a resync was started, which ends with its own marker */
      }
      const w = await HrlWriter.create(this.dir, { volumeId: this.volumeId, seq, startTimeMs: Date.now(), endTimeMs: Date.now(), volumeSize: this.state.sizeBytes, blockSize: this.state.blockSize, consistency: 'FUZZY', flags, tags: [] });
      await w.commit();
      return decodeHrl(await fsp.readFile(this.file(seq)), this.file(seq));
    }
  }

  /** The process server holds everything up to `seq` durably: record that, then delete those files. */
  async acked(seq: number): Promise<void> {
    if (seq <= this.state.ackedSeq) return;
    this.state = { ...this.state, ackedSeq: seq };
    await writeFileDurable(this.stateFile, JSON.stringify(this.state));
    this.recent.forgetThrough(seq);
    while (this.seqs.length > 0 && this.seqs[0]! <= seq) {
      const s = this.seqs.shift()!;
      this.bytes -= this.sizes.get(s) ?? 0;
      this.sizes.delete(s);
      await fsp.rm(this.file(s), { force: true });
    }
  }
}
