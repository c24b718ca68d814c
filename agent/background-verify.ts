// Background verify: DRBD's online verify, made continuous. A pass compares the whole source with the
// replica (the master target re-reads its replica, not its recorded hashes), capped in bytes per second
// and resumed where it stopped after a restart (its cursor is the resync state's). Blocks that differ where
// the tracker holds them as captured are damage on the replica side: raised as an alert and repaired by a
// targeted repair pass of just those ranges, through the normal differential path. Blocks still being
// written differ too, but the tracker sends those anyway: they are neither damage nor alerted.
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { writeFileDurable } from '../common/durable.js';
import type { Logger } from '../common/log.js';
import { monotonicMs } from './cadence.js';
import type { Resync } from './resync.js';

export interface BackgroundVerifyOptions {
  background: boolean;
  bytesPerSecond: number;
  startDelayMs: number;
  intervalMs: number;
}

/** What the passes found, kept across restarts (verify.json in the volume's state directory). */
export interface VerifyRecord {
  /** Complete verify passes. */
  passes: number;
  /** When the last complete pass ended (0: none yet), how long it took, and the damaged blocks it found. */
  lastPassEndedAt: number;
  lastPassMs: number;
  lastPassDamagedBlocks: number;
  /** Damaged blocks found by every pass so far, and repaired by the repairs that followed. */
  damagedBlocks: number;
  repairedBlocks: number;
  /** When the next pass may start. */
  nextDueAt: number;
}

export class BackgroundVerify {
  record!: VerifyRecord;
  /** When the next window of a background pass may be read (monotonic clock: a step of the wall clock must not stall it). */
  private nextStepAt = 0;
  private readonly file: string;

  constructor(dir: string, private readonly volumeId: string, private readonly resync: Resync, private readonly opts: BackgroundVerifyOptions, private readonly log: Logger) {
    this.file = path.join(dir, 'verify.json');
  }

  async open(): Promise<void> {
    const fresh: VerifyRecord = { passes: 0, lastPassEndedAt: 0, lastPassMs: 0, lastPassDamagedBlocks: 0, damagedBlocks: 0, repairedBlocks: 0, nextDueAt: Date.now() + this.opts.startDelayMs };
    try {
      this.record = { ...fresh, ...(JSON.parse(await fsp.readFile(this.file, 'utf8')) as Partial<VerifyRecord>) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: (e as Error).message }, 'background verify record unreadable; starting a new one');
      this.record = fresh;
      await this.save();
    }
  }

  /** Before a cycle: start a pass when one is due and no other pass runs or owes its end. */
  async maybeStart(): Promise<void> {
    const r = this.resync;
    if (!this.opts.background || r.active || r.state.endPending || Date.now() < this.record.nextDueAt) return;
    if (await r.start('verify', 'background verify', { background: true })) this.nextStepAt = 0;
  }

  /** A background pass ahead of its bandwidth cap: cycles go on, the next window waits. */
  get resting(): boolean {
    return this.resync.active && this.resync.state.background && monotonicMs() < this.nextStepAt;
  }

  /** After a step of the resync that read `bytes`; `passDone` when that step ended the pass. */
  async stepped(bytes: number, passDone: boolean): Promise<void> {
    const s = this.resync.state;
    if (!s.background) return;
    this.nextStepAt = monotonicMs() + (bytes / this.opts.bytesPerSecond) * 1000;
    if (!passDone) return;
    const rec = this.record;
    if (s.mode === 'verify') {
      rec.passes++;
      rec.lastPassEndedAt = s.finishedAt;
      rec.lastPassMs = s.finishedAt - s.startedAt;
      rec.lastPassDamagedBlocks = s.damagedBlocks;
      rec.damagedBlocks += s.damagedBlocks;
      rec.nextDueAt = s.finishedAt + this.opts.intervalMs;
      await this.save();
      if (s.damagedBlocks === 0) {
        this.log.info({ volume: this.volumeId, ms: rec.lastPassMs, bytes: s.bytesProcessed, inFlightBlocks: s.differingBlocks }, 'background verify pass complete: the replica equals the source');
        return;
      }
      this.log.error({ volume: this.volumeId, damagedBlocks: s.damagedBlocks, ranges: s.damagedRanges?.length ?? 'all' }, 'background verify: replica blocks differ from the source where nothing was being written; repairing them');
      // Null ranges (too many to list): the repair covers the whole volume.
      await this.resync.start('repair', `background verify found ${s.damagedBlocks} damaged block(s)`, { background: true, only: s.damagedRanges });
    } else if (s.mode === 'repair') {
      rec.repairedBlocks += s.damagedBlocks;
      await this.save();
      this.log.warn({ volume: this.volumeId, repairedBlocks: s.damagedBlocks, bytesSent: s.bytesSent }, 'background repair complete: damaged replica blocks sent again');
    }
  }

  status(): Record<string, unknown> {
    const rec = this.record;
    return { enabled: this.opts.background, ...rec, lastPassAgeMs: rec.lastPassEndedAt > 0 ? Date.now() - rec.lastPassEndedAt : null, bytesPerSecond: this.opts.bytesPerSecond };
  }

  private save(): Promise<void> {
    return writeFileDurable(this.file, JSON.stringify(this.record));
  }
}
