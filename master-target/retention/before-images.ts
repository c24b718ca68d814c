// Before-images of consecutive differentials, kept together (RetentionLog.batch): the applier adds the
// differentials of a group one by one and writes them to the replica only once durable() has returned.
// Until then the replica holds what it held before the batch's first differential, so differential k's
// before-image of a block is the data of the newest earlier differential of the batch that writes it (held
// in memory), or else the replica's bytes. Each differential's segment is made in the background while the
// next one is loaded (read, damage check, written: one at a time, in order); its fsync starts as soon as
// it is written, and once that is over it is renamed into place and the directory fsync'd, segment after
// segment in order (so the log on disk is always a chain, as RetentionLog.open requires).
//
// A crash anywhere before durable() returns leaves every differential of the batch unapplied, and the redo
// (Applier: from doneSeq + 1) finds the segments that got into place and keeps them (beforeApply's rule):
// they were taken from exactly the state it recreates. A differential whose segment is not in place was
// not written, nor was anything after it (its batch's writes wait for all of the batch's segments, and
// later batches for this one): the replica's bytes it reads at the redo are untouched by it and by anything
// after it, and the blocks earlier differentials of the redo's batch write come from them, in memory.
import { crc } from '../../common/checksum.js';
import { fsyncDir } from '../../common/durable.js';
import { wrap } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { RecoveryPoint } from '../volume-state.js';
import type { Replica } from '../replica.js';
import { readSegment, SegmentWriter, type BeforeImage, type SegmentHeader } from './segment.js';

/** What a batch needs of its retention log. */
export interface BatchOwner {
  readonly dir: string;
  readonly volumeId: string;
  readonly geometry: { sizeBytes: number; blockSize: number };
  readonly segments: ReadonlyArray<SegmentHeader & { file: string; bytes: number }>;
  readonly log: Logger;
  /** Before differential `seq`'s first segment: drop a chain that does not reach it. */
  startChain(seq: number): Promise<void>;
  /** Damage check of blocks read from the replica for differential `seq` (RetentionLog.checkBeforeImages). */
  checkBeforeImages(seq: number, ranges: ReadonlyArray<{ offset: number; length: number }>, read: Buffer[], expected: BigUint64Array): Promise<void>;
  /** Segments renamed into place and their directory fsync'd: list them (replacing `replaces`). */
  placed(segments: Array<{ header: SegmentHeader; file: string; bytes: number; replaces: string | null }>): void;
}

/** One block a differential overwrites: where its before-image comes from. */
interface Planned {
  block: number;
  offset: number;
  length: number;
  /** The newest earlier differential of the batch that wrote it; null: read from the replica. */
  from: Buffer | null;
}

interface Made {
  /** Its fsync (and close), started as soon as it is written: the next segment is made meanwhile. */
  synced: Promise<void>;
  writer: SegmentWriter;
  header: SegmentHeader;
  replaces: string | null;
}

/** About how many bytes a segment of these extents takes (the retention cap's admission, pause mode). */
export function segmentEstimate(extents: ReadonlyArray<{ length: number }>): number {
  return extents.reduce((n, e) => n + e.length + 20, 64);
}

export class BeforeImageBatch {
  /** segmentEstimate() of the batch's segments not yet in place (those in place count in the log's bytes). */
  unplaced = 0;
  /** Block -> the newest data the batch's differentials so far write there (slices of their raw data). */
  private readonly overlay = new Map<number, Buffer>();
  private readonly jobs: Array<Promise<Made | null>> = [];
  private lane: Promise<unknown> = Promise.resolve();
  /** Segments go into place one after another, in order, each durable (directory fsync'd) before the next. */
  private placing: Promise<void> = Promise.resolve();
  /** Segments planned in this batch (a differential before the first point keeps none). */
  private planned = 0;
  /** A differential without its data in memory was added: a later one could not take images from it. */
  private sealed = false;
  private over = false;

  constructor(private readonly owner: BatchOwner, private readonly replica: Replica, private readonly expected: BigUint64Array | null) {}

  /** False once a differential without its raw data is in (durable() must come next). */
  get accepts(): boolean {
    return !this.sealed && !this.over;
  }

  /** Would a differential after `base` keep before-images? Not before the first recovery point (the initial sync). */
  keeps(base: RecoveryPoint | null): boolean {
    return base !== null || this.owner.segments.length > 0 || this.planned > 0;
  }

  /**
   * Differential `seq` (its extents; `raws`, their data, when held in memory) is next. Its before-images
   * are planned now (from the batch's earlier differentials, or the replica) and made in the background.
   * `base`: the point before it; `tip`: the point it makes. `keep` false: it keeps no before-image (the
   * applier's rule before the first point, keeps()), but a later differential may take images from it.
   */
  async add(seq: number, extents: ReadonlyArray<{ offset: number; length: number }>, raws: Buffer[] | null, base: RecoveryPoint | null, tip: RecoveryPoint | null, keep = true): Promise<void> {
    if (!this.accepts) throw new Error('BeforeImageBatch.add after a differential without data, or after durable()');
    if (keep) {
      if (this.planned === 0) await this.owner.startChain(seq);
      this.planned++;
      const estimate = segmentEstimate(extents);
      this.unplaced += estimate;
      const plan = this.plan(extents);
      const existing = this.owner.segments.find((s) => s.fromSeq === seq && s.toSeq === seq) ?? null;
      const job = this.lane.then(() => this.make(seq, plan, existing, base, tip));
      this.lane = job.catch(() => {});
      this.jobs.push(job);
      // Never one after a segment that did not get into place: the log stays a chain (RetentionLog.open).
      this.placing = this.placing.then(() => job).then(async (m) => {
        if (m) await this.place(m);
        this.unplaced -= estimate;
      });
      this.placing.catch(() => {}); // awaited by durable() or abandon()
    }
    if (raws) this.write(extents, raws);
    else this.sealed = true;
  }

  /** Each block the extents cover, once, with its source as the batch stands (before these extents). */
  private plan(extents: ReadonlyArray<{ offset: number; length: number }>): Planned[] {
    const bs = this.owner.geometry.blockSize;
    const seen = new Set<number>();
    const out: Planned[] = [];
    for (const e of extents) {
      const end = e.offset + e.length;
      for (let offset = e.offset; offset < end; offset += bs) {
        const block = offset / bs;
        if (seen.has(block)) continue; // extents of one differential may overlap: its before-image is one
        seen.add(block);
        out.push({ block, offset, length: Math.min(bs, end - offset), from: this.overlay.get(block) ?? null });
      }
    }
    return out;
  }

  /** What the extents write, block by block (a later extent over an earlier one, as writeMany does). */
  private write(extents: ReadonlyArray<{ offset: number; length: number }>, raws: Buffer[]): void {
    const bs = this.owner.geometry.blockSize;
    extents.forEach((e, i) => {
      const raw = raws[i]!;
      for (let at = 0; at < e.length; at += bs) this.overlay.set((e.offset + at) / bs, raw.subarray(at, Math.min(at + bs, e.length)));
    });
  }

  /** Differential `seq`'s segment, fsync'd under its temp name (renamed by durable()); null: nothing new. */
  private async make(seq: number, plan: Planned[], existing: (SegmentHeader & { file: string }) | null, base: RecoveryPoint | null, tip: RecoveryPoint | null): Promise<Made | null> {
    const { owner } = this;
    const bs = owner.geometry.blockSize;
    // Applied again after a crash: its segment is kept (the replica may hold part of the new data); only
    // blocks it lacks are taken now (untouched until this batch writes).
    const images: BeforeImage[] = [];
    const have = new Set<number>();
    if (existing) {
      for await (const img of readSegment(existing.file)) {
        images.push(img);
        for (let b = img.offset / bs; b < (img.offset + img.data.length) / bs; b++) have.add(b);
      }
      plan = plan.filter((p) => !have.has(p.block));
      if (plan.length === 0) return null;
      owner.log.warn({ volume: owner.volumeId, seq, blocks: plan.length }, 're-applied differential writes blocks its segment lacks; adding their before-images');
    }
    // Runs of consecutive blocks with the same kind of source: one record each, one read per replica run.
    const runs: Array<{ offset: number; parts: Planned[] }> = [];
    for (const p of plan) {
      const last = runs.at(-1);
      const prev = last?.parts.at(-1);
      if (last && prev && prev.block + 1 === p.block && prev.length === bs && (prev.from === null) === (p.from === null)) last.parts.push(p);
      else runs.push({ offset: p.offset, parts: [p] });
    }
    const reads = runs.filter((r) => r.parts[0]!.from === null).map((r) => ({ offset: r.offset, length: r.parts.reduce((n, p) => n + p.length, 0) }));
    // One call for every range (a differential has hundreds or thousands): this is on the apply path.
    const read = await this.replica.readMany(reads);
    if (this.expected) await owner.checkBeforeImages(seq, reads, read, this.expected);
    let r = 0;
    for (const run of runs) {
      const data = run.parts[0]!.from === null ? read[r++]! : run.parts.length === 1 ? run.parts[0]!.from! : Buffer.concat(run.parts.map((p) => p.from!));
      images.push({ offset: run.offset, data, crc32c: crc(data) });
    }
    const header: SegmentHeader = { volumeId: owner.volumeId, fromSeq: seq, toSeq: seq, ...owner.geometry, base, tip, createdAt: Date.now() };
    const writer = await SegmentWriter.create(owner.dir, header);
    try {
      await writer.addMany(images);
      await writer.finish();
    } catch (e) {
      await writer.abort();
      throw wrap(e, `retention segment for differential ${seq}`, { volume: owner.volumeId, seq });
    }
    const synced = writer.sync();
    synced.catch(() => {}); // awaited by durable() or abandon()
    return { writer, synced, header, replaces: existing?.file ?? null };
  }

  /** A made segment, once fsync'd: renamed to its name, the directory fsync'd, then listed. */
  private async place(m: Made): Promise<void> {
    await m.synced;
    const { file, bytes } = await m.writer.rename();
    await fsyncDir(this.owner.dir);
    this.owner.placed([{ header: m.header, file, bytes, replaces: m.replaces }]);
  }

  /**
   * Every segment of the batch durable under its name: the batch's differentials may now write the
   * replica. On failure none of them may (what is in place stays: it was taken before any of the batch's
   * writes, and a redo keeps it; temp files are removed).
   */
  async durable(): Promise<void> {
    this.over = true;
    const settled = await Promise.allSettled(this.jobs);
    const placing = await Promise.allSettled([this.placing]);
    const failed = [...settled, ...placing].find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      await this.cleanUp(settled);
      throw wrap(failed.reason, 'retention segments of a group', { volume: this.owner.volumeId });
    }
  }

  /** Give up (the batch will not be written): wait for its background work, remove its temp files. */
  async abandon(): Promise<void> {
    this.over = true;
    const settled = await Promise.allSettled(this.jobs);
    await Promise.allSettled([this.placing]);
    await this.cleanUp(settled);
  }

  private async cleanUp(settled: Array<PromiseSettledResult<Made | null>>): Promise<void> {
    const made = settled.flatMap((s) => (s.status === 'fulfilled' && s.value ? [s.value] : []));
    await Promise.allSettled(made.map((m) => m.synced));
    await Promise.all(made.map((m) => m.writer.abort()));
  }
}
