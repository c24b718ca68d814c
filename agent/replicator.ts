// One protected volume on the agent: each cycle captures a view, asks the tracker for dirty extents and
// writes them to the journal as one differential. The uploader (proto/sender.ts) takes it from there.
import type { Logger } from '../common/log.js';
import type { Diff } from '../proto/hrl.js';
import { FLAG_RESYNC_END } from '../proto/hrl.js';
import type { OutboundVolume } from '../proto/sender.js';
import type { Capture } from './capture/capture.js';
import type { Journal } from './journal.js';
import type { Resync } from './resync.js';
import type { Tracker } from './trackers/tracker.js';
import type { Volume } from './volume.js';

export interface CycleResult {
  seq: number | null;
  bytes: number;
  more: boolean;
}

export class VolumeReplicator implements OutboundVolume {
  lastCycleAt = 0;
  lastCycleBytes = 0;
  blocked: string | null = null;

  constructor(
    readonly volumeId: string,
    readonly volume: Volume,
    readonly tracker: Tracker,
    readonly capture: Capture,
    readonly journal: Journal,
    readonly resync: Resync,
    private readonly opts: { maxDiffBytes: number; journalQuotaBytes: number; cycleIntervalMs: number; log: Logger },
  ) {}

  async cycle(): Promise<CycleResult> {
    if (this.journal.bytes >= this.opts.journalQuotaBytes) {
      // The tracker keeps the blocks dirty; they are captured once the journal drains.
      if (this.blocked === null) this.opts.log.warn({ volume: this.volumeId, bytes: this.journal.bytes }, 'journal quota reached; capture paused until acks free space');
      this.blocked = 'journal quota reached';
      return { seq: null, bytes: 0, more: false };
    }
    this.blocked = null;
    if (this.resync.active) {
      const before = this.journal.lastSeq;
      await this.resync.step();
      // A resync owns the volume until it is done. A verify sends nothing, so scanning goes on beside it,
      // at its usual interval rather than once per verified window.
      const verifying = this.resync.active && this.resync.state.mode === 'verify';
      if (!verifying || Date.now() - this.lastCycleAt < this.opts.cycleIntervalMs) {
        return { seq: this.journal.lastSeq > before ? this.journal.lastSeq : null, bytes: 0, more: true };
      }
    }
    return this.scanCycle();
  }

  private async scanCycle(): Promise<CycleResult> {
    const captured = await this.capture.begin();
    try {
      const startMs = this.lastCycleAt || captured.atMs;
      const col = await this.tracker.collect(captured.view, this.opts.maxDiffBytes);
      const ending = this.resync.state.endPending && !col.more;
      let seq: number | null = null;
      if (col.extents.length > 0 || ending) {
        seq = await this.journal.write({ startTimeMs: startMs, endTimeMs: Date.now(), consistency: captured.consistency, tags: captured.tags, flags: ending ? FLAG_RESYNC_END : 0 }, col.extents);
        await col.commit(); // only now are these blocks clean: the journal holds them durably
        if (ending) await this.resync.ended();
        this.opts.log.debug({ volume: this.volumeId, seq, bytes: col.bytes, extents: col.extents.length }, 'differential journaled');
      }
      this.lastCycleAt = captured.atMs;
      this.lastCycleBytes = col.bytes;
      return { seq, bytes: col.bytes, more: col.more };
    } finally {
      await captured.release();
    }
  }

  // OutboundVolume: what the uploader needs.
  describe(): { sizeBytes: number; blockSize: number; replicationId: string } {
    return { sizeBytes: this.journal.state.sizeBytes, blockSize: this.journal.state.blockSize, replicationId: this.journal.state.replicationId };
  }

  async pending(): Promise<number[]> {
    return this.journal.pending();
  }

  load(seq: number): Promise<Diff> {
    return this.journal.load(seq, async (ranges) => {
      // Unknown blocks lost: a pass under way may already count them clean, so start over from block 0.
      if (ranges === null) await this.resync.start('resync', 'damaged journal file');
      else await this.tracker.invalidate(ranges);
    });
  }

  acked(seq: number): Promise<void> {
    return this.journal.acked(seq);
  }

  status(): Record<string, unknown> {
    return {
      id: this.volumeId,
      path: this.volume.path,
      sizeBytes: this.volume.sizeBytes,
      tracker: this.tracker.kind,
      capture: this.capture.kind,
      resync: this.resync.progress(),
      consistentAfterResync: !this.resync.active && !this.resync.state.endPending,
      lastSeq: this.journal.lastSeq,
      ackedSeq: this.journal.state.ackedSeq,
      journalFiles: this.journal.pending().length,
      journalBytes: this.journal.bytes,
      lastCycleAt: this.lastCycleAt,
      lastCycleBytes: this.lastCycleBytes,
      blocked: this.blocked,
    };
  }
}
