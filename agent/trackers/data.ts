// The `data` tracker (data mode): the kernel hands over every write of the volume with its data, in
// issue order (native/datacap.ts; a write depending on a completed one is issued after it). A differential is a slice of that stream cut at a request
// boundary, so the replica after it is the volume as a crash at that instant would have left it: a
// CRASH point with no clone, freeze or re-read.
//
// Degrade, never lose. What the stream cannot carry is kept as dirty blocks (DirtyMap, persisted) and
// re-read from the live volume: requests the kernel dropped (ring full) or never saw issued or the reader could not queue
// (its bound reached, e.g. during a resync), writes not a whole number of blocks, ranges the journal
// lost. No point is claimed until those blocks are re-read; see `gap`. While there is a gap the queued
// records' data is not journaled either: they are folded into the dirty map (fold()), so the agent
// catches up with one re-read of the touched blocks instead of journaling every stale write.
//
// Restarts: the program and its maps stay pinned in bpffs while the agent is down, so writes go on being
// captured (or, once the ring is full, counted as dropped). Each write is also marked in the bitmap of
// the current epoch; an epoch's bitmap is emptied only once every record of it is journaled. So records
// consumed by an agent that died before journaling them are in an epoch bitmap, and re-read. Only a
// reboot, or pins that are gone, is an unprovable gap: a resync.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { blockDeviceInfo, type BlockDeviceInfo } from '../../common/device.js';
import { tmError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { BITS_DROPPED, BITS_EPOCH0, DataCapture, DC_DISCARD, DC_HDR, DC_MARK, DC_WRITE, DC_ZEROES, ensureBpffs, type CaptureStats, type DataRecord } from '../../native/datacap.js';
import type { VolumeReader } from '../volume.js';
import { boundary, toExtents } from './data-stream.js';
import { DirtyMap } from './dirty-map.js';
import { readRuns } from './read-runs.js';
import { bootId } from './tracefs.js';
import type { Collection, DirtyExtent, Tracker } from './tracker.js';

export interface DataTrackerOptions {
  /** Kernel ring, MiB (a power of two). */
  ringMiB: number;
  /** Records the reader thread may hold for the agent, MiB; past it they are dropped and re-read. */
  queueMiB: number;
  /** SCHED_FIFO priority of the reader thread; 0: ordinary scheduling. */
  fifoPriority: number;
  /** Identifies the pins of this volume across restarts (state dir + volume id). */
  pinKey: string;
  /** Tracking cannot be proven (completions the program never saw): must durably mark a resync. */
  onLost: (reason: string) => Promise<void>;
}

interface Meta {
  tracker: 'data';
  bootId: string;
  pinName: string;
  settings: string;
  /** /sys/block stat counts minus the program's at its load: more later means completions it missed. */
  statOffset: { writes: number; discards: number };
  /** The stat file the offset was taken from (absent: before the disk's stat was used for partitions). */
  statFile?: string;
}

/**
 * The block-layer counts data mode checks its programs against: the whole disk's, because the programs
 * count every write request of the disk, inside the volume's range or not. A partition's own stat counts
 * only its share, so other partitions' writes would cancel (hide) requests the programs missed.
 */
export function statFileOf(dev: Pick<BlockDeviceInfo, 'diskName'>): string {
  return `/sys/class/block/${dev.diskName}/stat`;
}

/** Bitmap chunks are blocks, unless a bitmap would pass this many bits (then chunks grow). */
const MAX_BITS = 2 ** 27;
/** Dirty blocks re-read into one differential at least (more when maxBytes leaves room). */
const RE_READ_MIN = 1024 * 1024;
/** Epochs turn at most this often (a flip empties a whole bitmap). */
const FLIP_MS = 1000;
/**
 * A capture's marker (streamMark) not in the stream this long after it was placed was lost (the reader
 * queue dropped it): its point is given up rather than held for ever.
 */
const MARK_WAIT_MS = 30_000;
/** In a gap, one collection folds at most this many times maxBytes of queued records into dirty blocks. */
const FOLD_MAX_TAKES = 16;
/** How long a collection waits for a capture's marker to reach the reader's queue. */
const MARK_SETTLE_MS = 50;

/** The bpffs directory name of a volume's pins (under the bpffs mount). */
export function dataPinName(pinKey: string): string {
  return `tidemark-${createHash('sha256').update(pinKey).digest('hex').slice(0, 16)}`;
}

export class DataTracker implements Tracker {
  readonly kind = 'data';
  readonly blockCount: number;
  private readonly file: string;
  private map!: DirtyMap;
  private meta!: Meta;
  private cap!: DataCapture;
  private chunkShift = 12;
  /** Records taken but past the last request boundary: the head of the next differential. */
  private carry: DataRecord[] = [];
  /**
   * Why no point can be claimed (null: none): drops, partial blocks, a restart, lost journal ranges.
   * Cleared once the dirty blocks are re-read with nothing lost since.
   */
  private gap: string | null = null;
  /** Drop counters as last harvested. */
  private lastLoss = 0;
  // Markers (DataCapture.mark) order user-space events against the stream. Tokens are unique per run.
  private nextToken = Math.floor(Math.random() * 2 ** 20) * 2 ** 32;
  /** Dirty blocks were added: put a marker in the stream; re-read only once it is taken. */
  private markWanted = false;
  private reReadMark: number | null = null;
  /**
   * Epochs: a marker placed FLIP_MS after a flip follows every record of the epochs before (their
   * programs ran microseconds long). Once it is journaled, flipping again may empty the older bitmap.
   */
  private proofMark: number | null = null;
  private flippedAt = -Infinity;
  /** Markers a capture placed (streamMark) and not yet found in the stream: token -> when placed. */
  private readonly placed = new Map<number, number>();
  /** Blocks of the last collection's records: dirty again if it is never committed. */
  private uncommitted: Array<[number, number]> | null = null;
  /** The uncommitted collection holds the proof marker: once its blocks are saved dirty, the epoch may turn. */
  private uncommittedProof = false;
  readonly stats: Record<string, number> = { missed: 0, nestedLost: 0, taken: 0, writeRecords: 0, completions: 0, records: 0, drops: 0, userDrops: 0, droppedBytes: 0, errors: 0, gaps: 0, reReadBlocks: 0, foldedBytes: 0, points: 0, queuedBytes: 0, dirtyBlocks: 0, inGap: 0, schedFifo: 0, flips: 0 };

  constructor(
    dir: string,
    private readonly volumePath: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
    private readonly log: Logger,
    private readonly opts: DataTrackerOptions,
  ) {
    this.file = path.join(dir, 'dirty-map.bin');
    this.blockCount = Math.ceil(sizeBytes / blockSize);
  }

  async open(): Promise<string | null> {
    const dev = await blockDeviceInfo(this.volumePath);
    if (!dev) throw tmError('TM_ERR_UNSUPPORTED', `data mode captures the writes of a block device; ${this.volumePath} is a file (protect its loop device, or use tracker "scan")`, { path: this.volumePath });
    if (!dev.requestBased) throw tmError('TM_ERR_UNSUPPORTED', `${dev.diskName} is a bio-based device (device-mapper, md, zram, pmem): the kernel reports no request completions for it, so data mode cannot see its writes; use tracker "scan"`, { path: this.volumePath });
    this.chunkShift = Math.max(Math.log2(this.blockSize), Math.ceil(Math.log2(Math.max(1, this.sizeBytes / MAX_BITS))));
    const settings = JSON.stringify({ dev: dev.diskDevT, start: dev.startSector, end: dev.endSector, ringMiB: this.opts.ringMiB, shift: this.chunkShift });
    const pinName = dataPinName(this.opts.pinKey);
    let loaded: { map: DirtyMap; meta: unknown } | null = null;
    let reason: string | null = null;
    try {
      loaded = await DirtyMap.load(this.file, this.blockSize, this.sizeBytes);
    } catch (e) {
      reason = `dirty map unreadable (${(e as Error).message})`;
    }
    const meta = loaded?.meta as Meta | undefined;
    this.map = loaded?.map ?? new DirtyMap(this.blockCount);
    const boot = await bootId();
    const resumable = !reason && meta?.tracker === 'data' && meta.bootId === boot && meta.settings === settings && meta.pinName === pinName;
    const pinDir = path.join(ensureBpffs(), pinName);
    this.cap = DataCapture.open(this.volumePath, {
      pinDir, major: Math.floor(dev.diskDevT / 2 ** 20), minor: dev.diskDevT % 2 ** 20, startByte: dev.startSector * 512, endByte: dev.endSector * 512, deviceStartByte: dev.startSector * 512,
      chunkShift: this.chunkShift, ringBytes: this.opts.ringMiB * 2 ** 20, maxQueueBytes: this.opts.queueMiB * 2 ** 20, fifoPriority: this.opts.fifoPriority, resume: resumable,
    });
    if (!loaded) reason ??= 'no tracking baseline';
    else if (!resumable) reason ??= meta?.bootId !== boot ? 'the machine rebooted since tracking was saved' : 'the device or data-mode settings changed';
    else if (!this.cap.resumed) reason = `the capture's pins in ${pinDir} are gone: writes since the agent stopped are unknown`;
    this.statFile = statFileOf(dev);
    // An offset taken from another stat file (a partition's, before) is taken again rather than trusted.
    const offsetValid = reason === null && meta?.statOffset && (meta.statFile ?? `/sys/class/block/${dev.name}/stat`) === this.statFile;
    this.meta = { tracker: 'data', bootId: boot, pinName, settings, statOffset: offsetValid ? meta!.statOffset : await this.statBaseline(), statFile: this.statFile };
    if (reason === null) {
      // Writes the last run consumed but may not have journaled, and what was dropped since: re-read,
      // after every record still in the ring from before now.
      const before = this.map.count;
      for (const which of [BITS_EPOCH0, BITS_EPOCH0 + 1, BITS_DROPPED]) this.mapBits(this.cap.bitmap(which));
      this.markGap('restarted: blocks written around the restart are re-read');
      this.log.info({ dirtyBlocks: this.map.count, fromBitmaps: this.map.count - before }, 'data mode resumed: the capture ran on while the agent was down');
    } else {
      // A fresh capture: the resync that follows brings the replica in step; the stream goes on from here.
      this.markGap(reason);
    }
    const s = this.cap.stats();
    this.lastLoss = s.drops + s.userDrops + s.errors;
    this.lastNested = [s.issueSkips, s.endSkips];
    await this.save();
    this.flip();
    // Loads the marker program now, so the first marker placed during a freeze does not wait for it.
    this.cap.mark(this.token());
    return reason;
  }

  private statFile = '';
  /** recursion_misses of the issue and completion programs at the last check. */
  private lastNested: [number, number] = [0, 0];

  /** The block layer's completion counts for this device (write group, discards). */
  private async blockStats(): Promise<{ writes: number; discards: number }> {
    const f = (await fsp.readFile(this.statFile, 'utf8')).trim().split(/\s+/).map(Number);
    return { writes: f[4] ?? 0, discards: f[11] ?? 0 };
  }

  /**
   * Stat minus program counts, read while nothing was issued meanwhile and nothing was in flight: the
   * program counts requests at issue, the stat at completion, so a request in flight at the baseline
   * would later hide a miss.
   */
  private async statBaseline(): Promise<{ writes: number; discards: number }> {
    const inflightFile = path.join(path.dirname(this.statFile), 'inflight');
    for (let i = 0; ; i++) {
      const before = this.cap.stats();
      const st = await this.blockStats();
      const inflight = (await fsp.readFile(inflightFile, 'utf8').catch(() => '0 0')).trim().split(/\s+/).reduce((n, v) => n + Number(v), 0);
      const after = this.cap.stats();
      if ((before.statWrites === after.statWrites && before.statDiscards === after.statDiscards && inflight === 0) || i >= 200) {
        return { writes: st.writes - after.statWrites, discards: st.discards - after.statDiscards };
      }
    }
  }

  /**
   * Completions the block layer counted of requests the programs never saw (issue skipped, and the
   * completion check skipped too, which the kernel does silently for completions in softirq on top of
   * some tasks): which blocks they wrote is unknown, so the volume is resynced. Stat is read first: every
   * request it counts was counted by a program before (at issue, at start for flush writes never issued,
   * or at completion), so a larger stat is a miss, never a race. Never-issued flush writes are counted at
   * start, not completion: a skipped completion of one was a false miss (issue 13).
   */
  private async checkMissed(): Promise<boolean> {
    const st = await this.blockStats();
    const s = this.cap.stats();
    const missed = st.writes - this.meta.statOffset.writes - s.statWrites + (st.discards - this.meta.statOffset.discards - s.statDiscards);
    // The kernel counts a skipped invocation (recursion_misses) before the request's bio_endio, so
    // unlike the stat (counted after it) it already shows a miss whose write the writer has seen
    // complete. A request is lost only if both its issue and its completion check were skipped.
    const [f0, s0] = this.lastNested;
    this.lastNested = [s.issueSkips, s.endSkips];
    const bothSkipped = s.issueSkips > f0 && s.endSkips > s0;
    if (bothSkipped) this.stats.nestedLost!++;
    if (missed <= 0 && !bothSkipped) return false;
    if (missed > 0) this.stats.missed! += missed;
    const why = missed > 0
      ? `${missed} write requests of ${this.volumePath} were not seen by the data-mode programs`
      : `a write request of ${this.volumePath} may have been skipped at issue and at completion (kernel recursion misses)`;
    this.log.error({ code: 'TM_ERR_TRACKING_LOST', reason: why }, 'data mode cannot prove it saw every write; the volume will be resynced');
    await this.opts.onLost(why);
    this.meta.statOffset = await this.statBaseline();
    await this.save();
    return true;
  }

  private markGap(why: string): void {
    if (this.gap === null) this.stats.gaps!++;
    this.gap = why;
    this.markWanted = true;
    this.reReadMark = null;
  }

  private token(): number {
    return this.nextToken++;
  }

  /**
   * Put a marker in the write stream now and return its token (null: the ring is full). Every write
   * issued before the call is before it in the stream, every write issued after it is after: a capture
   * that holds the application (FIFREEZE) around this call gets a point at exactly that instant by
   * passing the token to collect() as `until`.
   */
  /** Write requests of the volume's disk issued so far (a count that moves with every write). */
  writeCount(): number {
    const s = this.cap.stats();
    return s.statWrites + s.statDiscards + s.completions;
  }

  /** Whether a marker placed now can become a point: no loss is waiting to be re-read. */
  pointPossible(): boolean {
    return this.gap === null && this.map.count === 0;
  }

  streamMark(): number | null {
    const t = this.token();
    if (!this.cap.mark(t)) return null;
    this.placed.set(t, performance.now());
    return t;
  }

  /** Chunks set in a bitmap from the program, as dirty blocks. */
  private mapBits(bits: Buffer): number {
    const per = 2 ** (this.chunkShift - Math.log2(this.blockSize));
    let n = 0;
    for (let w = 0; w < bits.length / 8; w++) {
      const lo = bits.readUInt32LE(w * 8);
      const hi = bits.readUInt32LE(w * 8 + 4);
      if (lo === 0 && hi === 0) continue;
      for (let b = 0; b < 64; b++) {
        if (!((b < 32 ? lo >>> b : hi >>> (b - 32)) & 1)) continue;
        const chunk = w * 64 + b;
        this.map.set(chunk * per, (chunk + 1) * per);
        n++;
      }
    }
    return n;
  }

  private async save(): Promise<void> {
    await this.map.save(this.file, this.blockSize, this.sizeBytes, this.meta);
  }

  /** Move what the program and the reader dropped into the persisted map, then clear exactly that there. */
  private async harvest(s: CaptureStats): Promise<boolean> {
    const loss = s.drops + s.userDrops + s.errors;
    if (loss === this.lastLoss) return false;
    const bits = this.cap.bitmap(BITS_DROPPED);
    const chunks = this.mapBits(bits);
    await this.save();
    this.cap.clearBits(BITS_DROPPED, bits);
    this.log.warn({ drops: s.drops, userDrops: s.userDrops, errors: s.errors, chunks }, 'data mode: writes dropped; their blocks will be re-read, no point until then');
    this.lastLoss = loss;
    this.markGap(`writes dropped (ring or reader queue full): ${chunks} chunks re-read`);
    return true;
  }

  private flip(): void {
    this.cap.flip();
    this.stats.flips!++;
    this.flippedAt = performance.now();
    this.proofMark = null;
  }

  /** The slice holding the proof marker is journaled: every record of the older epoch is. */
  private journaled(proofInSlice: boolean): void {
    if (proofInSlice) this.flip();
  }

  async collect(view: VolumeReader, maxBytes: number, _cont?: boolean, until?: number): Promise<Collection> {
    if (this.uncommitted) {
      // The last collection never reached the journal (it failed, or was not written): its records are gone.
      for (const [first, end] of this.uncommitted) this.map.set(first, end);
      this.markGap('a differential was not journaled: its blocks are re-read');
      await this.save();
      this.uncommitted = null;
      // Its records are accounted now (dirty, saved): as good as journaled for the epoch it proved.
      // Without this the proof marker, never seen again, would hold the epoch for good.
      if (this.uncommittedProof) this.journaled(true);
      this.uncommittedProof = false;
    }
    if (this.proofMark === null && performance.now() - this.flippedAt >= FLIP_MS) {
      const t = this.token();
      if (this.cap.mark(t)) this.proofMark = t;
    }
    const s0 = this.cap.stats();
    const dropping = await this.harvest(s0);
    if (this.markWanted) {
      // Re-read only after every record reserved before now is taken: an older record applied after a
      // re-read would undo it. The marker says when.
      const t = this.token();
      if (this.cap.mark(t)) {
        this.reReadMark = t;
        this.markWanted = false;
      }
    }
    const carried = this.carry.reduce((n, r) => n + r.length, 0);
    let fresh = this.cap.takeRecords(Math.max(1, maxBytes - carried));
    // A capture's marker was placed just before (the application held for it): the reader, woken by it,
    // queues it within milliseconds. Wait that long rather than hold the view over another cycle.
    if (until !== undefined && this.placed.has(until) && !fresh.some((r) => (r.flags & DC_MARK) !== 0 && r.seq === until) && !this.carry.some((r) => (r.flags & DC_MARK) !== 0 && r.seq === until)) {
      for (const end = performance.now() + MARK_SETTLE_MS; performance.now() < end && fresh.reduce((n, r) => n + DC_HDR + (r.data?.length ?? 0), 0) < maxBytes; ) {
        await new Promise((r) => setTimeout(r, 2));
        const more = this.cap.takeRecords(Math.max(1, maxBytes - carried));
        fresh = fresh.concat(more);
        if (more.some((r) => (r.flags & DC_MARK) !== 0 && r.seq === until)) break;
      }
    }
    const all = this.carry.length > 0 ? [...this.carry, ...fresh] : fresh;
    this.stats.taken! += fresh.length;
    for (const r of fresh) if (r.flags & DC_WRITE) this.stats.writeRecords!++;
    // After the take: a completion missed before the records just taken shows in the stat by now.
    const missed = await this.checkMissed();
    const s = this.cap.stats();
    // In a gap no point can be claimed, so journaling each queued write's data only falls further
    // behind: the records become dirty blocks instead, re-read once (newest data) when the gap closes.
    if (this.gap !== null && until === undefined && !missed) return this.fold(view, maxBytes, all, s, dropping);
    // With nothing more queued and no boundary in sight, send what there is (no point claimed).
    let { take, atBoundary } = boundary(all, s.queuedBytes === 0 && fresh.length === 0);
    // A capture's marker: the slice ends exactly there. It is a point only if the marker is itself a
    // request boundary (nothing issued was half recorded when it was placed; under a freeze nothing of
    // the filesystem is in flight).
    let marked = false;
    let markLost = false;
    if (until !== undefined) {
      const at = all.findIndex((r) => (r.flags & DC_MARK) !== 0 && r.seq === until);
      if (at >= 0) {
        take = at + 1;
        atBoundary = boundary(all.slice(0, take), false).take === take;
        marked = true;
        this.placed.delete(until);
      } else if (performance.now() - (this.placed.get(until) ?? -Infinity) > MARK_WAIT_MS) {
        marked = true;
        markLost = true;
        this.placed.delete(until);
        this.log.error({ token: until }, 'data mode: a capture\'s marker never reached the stream (dropped by the reader); its point is given up');
      }
    }
    const slice = all.slice(0, take);
    this.carry = all.slice(take);
    let proofInSlice = false;
    for (const r of slice) {
      if (!(r.flags & DC_MARK)) continue;
      if (r.seq === this.reReadMark) this.reReadMark = -1; // taken: re-reads may go
      if (r.seq === this.proofMark) proofInSlice = true;
    }
    const cut = toExtents(slice, this.blockSize);
    const before = this.map.count;
    for (const [first, end] of cut.partial) this.map.set(first, end);
    if (this.map.count > before) this.markGap('writes of part of a block: those blocks are re-read');
    const lostMeanwhile = s.drops + s.userDrops + s.errors !== this.lastLoss;
    // A point: a request boundary with nothing lost or pending before it.
    const point = atBoundary && this.gap === null && this.map.count === 0 && !lostMeanwhile && !missed && !markLost;
    if (marked && !point) this.log.warn({ atBoundary, gap: this.gap, dirtyBlocks: this.map.count, lostMeanwhile, missed, markLost }, 'data mode: the stream at a capture\'s marker is not a point');
    // Dirty blocks, read after the records (their data is the newest) once the marker is taken.
    const { picked, reRead } = this.map.count > 0 && this.reReadMark === -1 && !this.markWanted
      ? await this.reReadRuns(view, Math.max(RE_READ_MIN, maxBytes - cut.bytes))
      : { picked: [], reRead: [] };
    const pickedBlocks = picked.reduce((n, [a, b]) => n + b - a, 0);
    const closes = this.gap !== null && pickedBlocks === this.map.count && !lostMeanwhile && !this.markWanted;
    const extents = reRead.length > 0 ? [...cut.extents, ...reRead] : cut.extents;
    this.copyStats(s);
    // Nothing to journal (markers, flushes only): the replicator writes no differential for it.
    if (extents.length === 0 && picked.length === 0) this.journaled(proofInSlice);
    else {
      this.uncommitted = [...cut.extents.map((e): [number, number] => [e.offset / this.blockSize, (e.offset + e.length) / this.blockSize])];
      this.uncommittedProof = proofInSlice;
    }
    return {
      extents,
      bytes: extents.reduce((n, e) => n + e.length, 0),
      more: s.queuedBytes > 0 || this.carry.length > 0 || (this.map.count > pickedBlocks && this.reReadMark === -1),
      point,
      marked,
      commit: async () => {
        this.reReadDone(picked, pickedBlocks, closes);
        if (point) this.stats.points!++;
        this.uncommitted = null;
        this.uncommittedProof = false;
        this.journaled(proofInSlice);
        if (picked.length > 0 || cut.partial.length > 0) await this.save();
        this.stats.dirtyBlocks = this.map.count;
      },
    };
  }

  /**
   * Gap phase: every record taken (in stream order, so no older record of these blocks is left queued)
   * marks its blocks dirty in the persisted map; nothing of its data is journaled. The map is saved
   * before the epoch may flip (the flip is what forgets the records), so a crash before the save leaves
   * them in an epoch bitmap. Dirty blocks are re-read as in collect(): only once the re-read marker is
   * taken (records older than a drop still queued would otherwise undo a re-read), and newest last.
   */
  private async fold(view: VolumeReader, maxBytes: number, all: DataRecord[], s: CaptureStats, dropping: boolean): Promise<Collection> {
    this.carry = [];
    let proofInSlice = false;
    let foldedBytes = 0;
    let taken = 0;
    // Folding is cheap: take the whole backlog (within a bound) so the reader's queue drains.
    for (let recs = all; ; ) {
      for (const r of recs) {
        if (r.flags & DC_MARK) {
          if (r.seq === this.reReadMark) this.reReadMark = -1;
          if (r.seq === this.proofMark) proofInSlice = true;
          continue;
        }
        if (!(r.flags & (DC_WRITE | DC_DISCARD | DC_ZEROES)) || r.length === 0) continue;
        this.map.set(Math.floor(r.offset / this.blockSize), Math.ceil((r.offset + r.length) / this.blockSize));
        foldedBytes += r.length;
      }
      taken += recs.length;
      if (this.cap.stats().queuedBytes === 0 || taken === 0 || foldedBytes >= FOLD_MAX_TAKES * maxBytes) break;
      recs = this.cap.takeRecords(maxBytes);
      if (recs.length === 0) break;
      this.stats.taken! += recs.length;
    }
    s = this.cap.stats();
    this.stats.foldedBytes! += foldedBytes;
    if (foldedBytes > 0) await this.save();
    // Every record taken is now either in the saved map or carried no data: the epoch may turn.
    this.journaled(proofInSlice);
    const lostMeanwhile = s.drops + s.userDrops + s.errors !== this.lastLoss;
    // Re-read only once the backlog is folded and nothing is being dropped any more: blocks re-read while
    // stale writes of them are still queued, or while the stream still overflows (the gap cannot close),
    // would be re-read again; caught up, each touched block is read once.
    const caughtUp = s.queuedBytes <= RE_READ_MIN && !dropping && !lostMeanwhile;
    const { picked, reRead } = this.map.count > 0 && this.reReadMark === -1 && !this.markWanted && caughtUp
      ? await this.reReadRuns(view, Math.max(RE_READ_MIN, maxBytes))
      : { picked: [], reRead: [] };
    const pickedBlocks = picked.reduce((n, [a, b]) => n + b - a, 0);
    const closes = pickedBlocks === this.map.count && !lostMeanwhile && !this.markWanted;
    this.copyStats(s);
    return {
      extents: reRead,
      bytes: reRead.reduce((n, e) => n + e.length, 0),
      more: s.queuedBytes > 0 || (this.map.count > pickedBlocks && this.reReadMark === -1 && caughtUp),
      point: false,
      marked: false,
      commit: async () => {
        this.reReadDone(picked, pickedBlocks, closes);
        if (picked.length > 0) await this.save();
        this.stats.dirtyBlocks = this.map.count;
      },
    };
  }

  /** Re-read runs are journaled: clean them; the gap closes if they were all the map held and nothing was lost since. */
  private reReadDone(picked: Array<[number, number]>, pickedBlocks: number, closes: boolean): void {
    for (const [first, end] of picked) this.map.clear(first, end);
    this.stats.reReadBlocks! += pickedBlocks;
    if (closes && this.map.count === 0 && !this.markWanted) {
      this.log.info({ after: this.gap }, 'data mode: dirty blocks re-read; points resume');
      this.gap = null;
    }
  }

  /** Dirty runs of the map, in order, until `budget` bytes, read from the live volume (not yet cleared). */
  private async reReadRuns(view: VolumeReader, budget: number): Promise<{ picked: Array<[number, number]>; reRead: DirtyExtent[] }> {
    const picked: Array<[number, number]> = [];
    let bytes = 0;
    for (const [first, end] of this.map.runs(RE_READ_MIN / this.blockSize)) {
      if (bytes >= budget) break;
      picked.push([first, end]);
      bytes += (end - first) * this.blockSize;
    }
    return { picked, reRead: await readRuns(view, picked, this.blockSize) };
  }

  private copyStats(s: CaptureStats): void {
    Object.assign(this.stats, { empty: s.empty, otherOps: s.otherOps, issueSkips: s.issueSkips, endSkips: s.endSkips, unseen: s.unseen, requeues: s.requeues, flushStarts: s.flushStarts, completions: s.completions, records: s.records, drops: s.drops, userDrops: s.userDrops, droppedBytes: s.droppedBytes, errors: s.errors, queuedBytes: s.queuedBytes, schedFifo: s.schedFifo, dirtyBlocks: this.map.count, inGap: this.gap === null ? 0 : 1 });
  }

  async invalidate(ranges: { offset: number; length: number }[]): Promise<void> {
    for (const r of ranges) this.map.set(Math.floor(r.offset / this.blockSize), Math.ceil((r.offset + r.length) / this.blockSize));
    this.markGap('journal ranges lost: re-read');
    await this.save();
  }

  /** A resync read the whole volume; writes during it are in the stream, or dropped and re-read. */
  async adoptBaseline(): Promise<void> {}

  /**
   * Whether a block just read is journaled as read cannot be told cheaply (its newest write may still be
   * in the ring): a background verify calls nothing damage in data mode.
   */
  async settled(_firstBlock: number, leaves: BigUint64Array): Promise<boolean[]> {
    return Array.from(leaves, () => false);
  }

  get dirtyBlocks(): number {
    const s = this.cap.stats();
    return this.map.count + Math.ceil(s.queuedBytes / this.blockSize) + this.carry.length;
  }

  async close(): Promise<void> {
    // The program stays pinned: writes until the agent is back are captured, or counted as dropped.
    this.cap.close(false);
    await this.save();
  }
}
