// The durable queue of differentials one hop holds for the next: committed .hrl files in one folder,
// named by sequence number, each deleted only after the state recording it done with (acknowledged by the
// process server, forwarded and acknowledged, or applied) is durable. The agent's Journal and the
// receivers' DiffStore (process server cache, master target staging) are each this queue plus their own
// state.json (docs/FORMAT.md §4, §5). Crash recovery at open: unfinished `.tmp` files are deleted, files
// already done with are deleted, the rest are queued again.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { ensureDir, fsyncDir, removeTempFiles, unlinkDurable } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import { HrlWriter, hrlName, listDiffs, type Diff } from './hrl.js';
import { RECENT_BYTES, RecentDiffs } from './recent-diffs.js';

/** What a stand-in differential must say of its volume. */
export interface StandInVolume {
  volumeId: string;
  volumeSize: number;
  blockSize: number;
}

/**
 * A volume's state.json, or null if there is none. Unreadable, or written by a newer Tidemark than
 * `maxVersion`: TM_ERR_STATE_CORRUPT (`reader` names this side in the message: "this agent").
 */
export async function readStateJson<S extends { version?: number }>(file: string, maxVersion: number, reader: string): Promise<S | null> {
  let state: S;
  try {
    state = JSON.parse(await fsp.readFile(file, 'utf8')) as S;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw tmError('TM_ERR_STATE_CORRUPT', `${file}: ${(e as Error).message}`, { path: file });
  }
  const version = state.version ?? 1;
  if (version > maxVersion) {
    throw tmError('TM_ERR_STATE_CORRUPT', `${file} is format version ${version}; ${reader} reads up to ${maxVersion} (written by a newer Tidemark)`, { path: file });
  }
  return state;
}

export class DurableQueue {
  private seqs: number[] = [];
  private readonly sizes = new Map<number, number>();
  /** Differentials just written, kept in memory so the next step need not read them back. */
  private readonly recent: RecentDiffs;
  /** Bytes on disk of the queued files. */
  bytes = 0;

  /** `recentBytes`: how much of what was just written is kept in memory for the next step (RecentDiffs). */
  constructor(readonly dir: string, recentBytes = RECENT_BYTES) {
    this.recent = new RecentDiffs(recentBytes);
  }

  /**
   * Crash recovery: make the folder, delete unfinished `.tmp` files, read the owner's state (`readState`
   * returns the highest sequence done with), delete the files up to it (done before a crash, not yet
   * deleted) and queue the rest. Returns how many unfinished files were removed.
   */
  async open(readState: () => Promise<number>): Promise<number> {
    await ensureDir(this.dir);
    const removed = await removeTempFiles(this.dir);
    const done = await readState();
    for (const seq of await listDiffs(this.dir)) {
      if (seq <= done) await unlinkDurable(this.file(seq));
      else this.track(seq, (await fsp.stat(this.file(seq))).size);
    }
    return removed;
  }

  file(seq: number): string {
    return path.join(this.dir, hrlName(seq));
  }

  /** The highest sequence queued, or 0. */
  get last(): number {
    return this.seqs.at(-1) ?? 0;
  }

  pending(): number[] {
    return this.seqs;
  }

  /** A differential was committed (durably) into the folder; `diff` is its content as written, if kept. */
  async added(seq: number, diff: Diff | null = null): Promise<void> {
    this.recent.remember(seq, diff);
    this.track(seq, (await fsp.stat(this.file(seq))).size);
  }

  /** The differential from memory, if it is still kept there; handed over once (RecentDiffs.take). */
  kept(seq: number): Diff | undefined {
    return this.recent.take(seq);
  }

  /**
   * The acknowledgement loop: `record` makes durable that everything up to `seq` is done with; only after
   * it succeeded are those files forgotten and deleted. A crash between the two leaves files that open()
   * deletes.
   */
  async doneThrough(seq: number, record: () => Promise<void>): Promise<void> {
    await record();
    this.recent.forgetThrough(seq);
    while (this.seqs.length > 0 && this.seqs[0]! <= seq) {
      const s = this.seqs.shift()!;
      this.untrack(s);
      await fsp.rm(this.file(s), { force: true });
    }
  }

  /** Forget and delete the files from `seq` on (found damaged): the sender will send them again. */
  async discardFrom(seq: number): Promise<void> {
    this.recent.forgetFrom(seq);
    const keep = this.seqs.filter((s) => s < seq);
    for (const s of this.seqs.filter((x) => x >= seq)) {
      this.untrack(s);
      await fsp.rm(this.file(s), { force: true });
    }
    this.seqs = keep;
  }

  /** Move every queued file into `aside` (an existing folder), durably in both folders; the queue is then empty. Returns how many. */
  async moveAll(aside: string): Promise<number> {
    const moved = [...this.seqs];
    for (const s of moved) await fsp.rename(this.file(s), path.join(aside, hrlName(s)));
    await fsyncDir(aside);
    await fsyncDir(this.dir);
    this.recent.forgetFrom(0);
    this.seqs = [];
    this.sizes.clear();
    this.bytes = 0;
    return moved.length;
  }

  /**
   * Replace the (damaged) differential `seq` by an empty FUZZY one of the same number, durably, so the
   * sequence stays gap-free and nothing corrupt goes on; `flags` says what it stands for (FLAG_RESYNC:
   * only a resync can bring its blocks back; or the damaged file's own flags). Returns it as written.
   */
  async standIn(seq: number, volume: StandInVolume, flags: number): Promise<Diff> {
    const now = Date.now();
    const w = await HrlWriter.create(this.dir, { ...volume, seq, startTimeMs: now, endTimeMs: now, consistency: 'FUZZY', flags, tags: [] }, { keep: true });
    await w.commit();
    if (this.sizes.has(seq)) {
      this.untrack(seq);
      this.sizes.set(seq, (await fsp.stat(this.file(seq))).size);
      this.bytes += this.sizes.get(seq)!;
    }
    return w.diff()!;
  }

  private track(seq: number, size: number): void {
    this.seqs.push(seq);
    this.sizes.set(seq, size);
    this.bytes += size;
  }

  private untrack(seq: number): void {
    this.bytes -= this.sizes.get(seq) ?? 0;
    this.sizes.delete(seq);
  }
}
