// The `blocktrace` tracker: the kernel tells us which blocks were written. A tracefs instance owned by
// this volume records block_rq_complete for its disk (filtered in the kernel); a drain reads the events
// without consuming them, makes the dirty map that includes them durable, then consumes exactly those
// events. So an agent killed at any instant loses nothing: unconsumed events wait in the kernel, and
// consumed ones are in the map. Per-CPU counters prove it: events the kernel overwrote (overrun), events
// consumed that the map does not account for, a reboot, or a reconfigured instance all mean "cannot prove
// we saw every write", and the volume is resynced (TM_ERR_TRACKING_LOST).
//
// Why completions: a request that completed before the capture instant is in the snapshot; one that
// completes later is reported in a later drain. Events drained after the snapshot was taken may or may not
// be in it, so their blocks are read now and also stay dirty for the next cycle (sent twice, never missed).
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { blockDeviceInfo, type BlockDeviceInfo } from '../../common/device.js';
import { tmError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { VolumeReader } from '../volume.js';
import { DirtyMap } from './dirty-map.js';
import { parseRqEvents } from './rq-events.js';
import { readRuns } from './read-runs.js';
import { bootId, TraceInstance, tracefsRoot, type CpuStats, type InstanceConfig } from './tracefs.js';
import type { Collection, Tracker } from './tracker.js';

const MAX_EXTENT = 1024 * 1024;
/** A map that only shrank (blocks journaled) is saved at most this often; growth is saved before consuming. */
const SAVE_SHRUNK_MS = 5000;
/** Bytes a block_rq_complete event takes in the ring buffer (measured: ~74k fit in 4 MiB). */
const EVENT_BYTES = 57;
/** A drain that found a CPU's buffer over a quarter full comes back this soon, before it can overrun. */
const BUSY_DRAIN_MS = 20;

export interface BlockTraceOptions {
  bufferKiB: number;
  drainIntervalMs: number;
  /** Tracking lost: must durably mark the volume for resync before it returns. */
  onLost: (reason: string) => Promise<void>;
  /** Makes the map and its counters durable (default: DirtyMap.save); tests inject failures here. */
  saveMap?: (file: string, map: DirtyMap, meta: unknown) => Promise<void>;
}

interface Meta {
  instance: string;
  bootId: string;
  filter: string;
  /** As configured, and as the kernel rounded it. */
  bufferKiB: number;
  actualKiB: number;
  /** Per CPU: counters as of the last durable map (read = events consumed and accounted for). */
  cpus: Record<string, Pick<CpuStats, 'read' | 'overrun' | 'dropped'>>;
}

export class BlockTraceTracker implements Tracker {
  readonly kind = 'blocktrace';
  readonly blockCount: number;
  private readonly file: string;
  private map!: DirtyMap;
  private meta!: Meta;
  private dev!: BlockDeviceInfo;
  private instance!: TraceInstance;
  private root = '';
  private wanted!: InstanceConfig;
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  /**
   * Blocks drained since the drain just before the capture: they completed around or after the snapshot,
   * so they may be missing from it. Read them now and keep them dirty when the collection commits.
   */
  private keep: Array<[number, number]> | null = null;
  /** Blocks of the point being collected (dirty when its view was taken) not yet journaled. */
  private point: DirtyMap | null = null;
  private savedAt = 0;
  private unsaved = false;
  private closed = false;
  /** The last drain found a buffer filling fast. */
  private busy = false;
  readonly stats = { events: 0, drains: 0, lost: 0, lastDrainMs: 0 };

  constructor(
    dir: string,
    private readonly volumePath: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
    private readonly log: Logger,
    private readonly opts: BlockTraceOptions,
  ) {
    this.file = path.join(dir, 'dirty-map.bin');
    this.blockCount = Math.ceil(sizeBytes / blockSize);
  }

  /** Serialise drains, collections and commits: each sees the map and counters whole. */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  async open(): Promise<string | null> {
    const dev = await blockDeviceInfo(this.volumePath);
    if (!dev) throw tmError('TM_ERR_UNSUPPORTED', `blocktrace tracks block devices; ${this.volumePath} is a file (protect its loop device, or use tracker "scan")`, { path: this.volumePath });
    if (!dev.requestBased) throw tmError('TM_ERR_UNSUPPORTED', `${dev.diskName} is a bio-based device (device-mapper or md): the kernel reports no request completions for it; use tracker "scan"`, { path: this.volumePath });
    if (process.getuid?.() !== 0) throw tmError('TM_ERR_UNSUPPORTED', 'blocktrace needs root (it owns a tracefs instance); run the agent as root or use tracker "scan"');
    this.dev = dev;
    this.root = await tracefsRoot();
    const wanted: InstanceConfig = {
      // Requests starting past our end are not ours; those starting before our start are clipped when parsed.
      filter: `dev == ${dev.diskDevT} && sector < ${dev.endSector} && !(rwbs ~ "R*")`,
      bufferKiB: this.opts.bufferKiB,
    };
    this.wanted = wanted;
    let reason: string | null = null;
    let loaded: { map: DirtyMap; meta: unknown } | null = null;
    try {
      loaded = await DirtyMap.load(this.file, this.blockSize, this.sizeBytes);
    } catch (e) {
      reason = `dirty map unreadable (${(e as Error).message})`;
    }
    this.map = loaded?.map ?? new DirtyMap(this.blockCount);
    if (!loaded) reason ??= 'no tracking baseline';
    else reason = await this.resumable(loaded.meta as Meta, wanted);
    if (reason === null) {
      this.meta = loaded!.meta as Meta;
      this.instance = new TraceInstance(this.root, this.meta.instance);
      this.log.info({ instance: this.meta.instance, dirtyBlocks: this.map.count }, 'blocktrace resumed: events written while the agent was down are in the kernel buffer');
    } else {
      await this.restart(wanted, reason);
    }
    this.tick();
    return reason;
  }

  /** Why tracking cannot go on from the saved state, or null when every event since is provably still there. */
  private async resumable(meta: Meta, wanted: InstanceConfig): Promise<string | null> {
    if (meta.bootId !== (await bootId())) return 'the machine rebooted since tracking was saved';
    const inst = new TraceInstance(this.root, meta.instance);
    if (!(await inst.exists())) return `tracing instance ${meta.instance} is gone`;
    if (meta.filter !== wanted.filter || meta.bufferKiB !== wanted.bufferKiB) return 'the device or tracking settings changed';
    const off = await inst.check({ filter: meta.filter, bufferKiB: meta.actualKiB });
    if (off) return off;
    for (const cpu of await inst.cpus()) {
      const now = await inst.stats(cpu);
      const then = meta.cpus[cpu] ?? { read: 0, overrun: 0, dropped: 0 };
      const lost = this.lostSince(cpu, then, now);
      // Fewer consumed than recorded: a drain was killed after saving and before consuming; those events
      // are still in the buffer (and already in the map), provided the buffer still holds that many.
      if (lost) return lost;
      if (now.read < then.read && now.entries < then.read - now.read) return `cpu ${cpu}: the buffer was cleared`;
      // Go on from what the kernel has consumed; events saved but not consumed are simply read again.
      then.read = now.read;
      meta.cpus[cpu] = then;
    }
    return null;
  }

  private lostSince(cpu: number, then: Meta['cpus'][string], now: CpuStats): string | null {
    if (now.overrun > then.overrun) return `cpu ${cpu}: the kernel buffer overran, ${now.overrun - then.overrun} events lost`;
    if (now.dropped > then.dropped) return `cpu ${cpu}: ${now.dropped - then.dropped} events dropped`;
    if (now.read > then.read) return `cpu ${cpu}: ${now.read - then.read} events were consumed without being recorded`;
    return null;
  }

  /** Tracking lost: mark the resync durably first, then start a fresh instance and save the new baseline. */
  private async restart(wanted: InstanceConfig, reason: string): Promise<void> {
    this.log.warn({ reason }, 'blocktrace cannot prove it saw every write; the volume will be resynced');
    await this.opts.onLost(reason);
    const prefix = `tidemark.${path.basename(path.dirname(this.file))}.`;
    const name = prefix + randomBytes(4).toString('hex');
    for (const old of await TraceInstance.stale(this.root, prefix, name)) await old.remove();
    this.instance = new TraceInstance(this.root, name);
    const actualKiB = await this.instance.create(wanted);
    this.meta = { instance: name, bootId: await bootId(), ...wanted, actualKiB, cpus: {} };
    for (const cpu of await this.instance.cpus()) {
      const s = await this.instance.stats(cpu);
      this.meta.cpus[cpu] = { read: s.read, overrun: s.overrun, dropped: s.dropped };
    }
    await this.save();
  }

  /**
   * Save the map with `meta`, which becomes the tracker's only once it is durable: counters that ran ahead
   * of a failed save would make the next drain see events "consumed without being recorded".
   */
  private async save(meta: Meta = this.meta): Promise<void> {
    if (this.opts.saveMap) await this.opts.saveMap(this.file, this.map, meta);
    else await this.map.save(this.file, this.blockSize, this.sizeBytes, meta);
    this.meta = meta;
    this.savedAt = Date.now();
    this.unsaved = false;
  }

  private tick(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.drain()
        .catch((e: Error) => this.log.error({ err: e.message }, 'blocktrace drain failed; will retry'))
        .finally(() => this.tick());
    }, this.busy ? BUSY_DRAIN_MS : this.opts.drainIntervalMs);
  }

  /** Move the kernel's events into the durable map. */
  drain(): Promise<number> {
    return this.locked(() => this.drainNow());
  }

  private async drainNow(): Promise<number> {
    const t0 = performance.now();
    const inst = this.instance;
    // Removed or reconfigured under us: events may be gone; start a fresh instance (and a resync) once.
    const off = (await inst.exists()) ? await inst.check({ filter: this.meta.filter, bufferKiB: this.meta.actualKiB }) : `tracing instance ${inst.name} was removed`;
    if (off) {
      // A loss like an overrun (events may be gone): logged with its code, so it is counted as one.
      this.stats.lost++;
      this.log.error({ code: 'TM_ERR_TRACKING_LOST', reason: off }, 'blocktrace lost events; the volume will be resynced');
      await this.restart(this.wanted, off);
      return 0;
    }
    let lost: string | null = null;
    let busiest = 0;
    const taken: Array<{ cpu: number; text: string; lines: number; readBefore: number; overrunBefore: number }> = [];
    const bs = this.blockSize;
    const { startSector, endSector } = this.dev;
    const onWrite = (sector: number, sectors: number): void => {
      const from = Math.max(sector, startSector) - startSector;
      const to = Math.min(sector + sectors, endSector) - startSector;
      if (to <= from) return;
      const first = Math.floor((from * 512) / bs);
      const end = Math.ceil((to * 512) / bs);
      this.map.set(first, end);
      this.keep?.push([first, end]);
    };
    // Counters as of this drain: committed with the map that accounts for them, or not at all (an error
    // part-way leaves the saved ones, and the unconsumed events are simply read again).
    const cpus = { ...this.meta.cpus };
    for (const cpu of await inst.cpus()) {
      const before = await inst.stats(cpu);
      const then = this.meta.cpus[cpu] ?? { read: before.read, overrun: before.overrun, dropped: before.dropped };
      lost ??= this.lostSince(cpu, then, before);
      if (before.read < then.read) lost ??= `cpu ${cpu}: the buffer was cleared by someone else`;
      const text = await inst.peek(cpu);
      const lines = text.length === 0 ? 0 : parseRqEvents(text, onWrite, (n) => { lost ??= `cpu ${cpu}: the kernel buffer overran, ${n} events lost`; });
      cpus[cpu] = { read: before.read + lines, overrun: before.overrun, dropped: before.dropped };
      if (lines > 0) taken.push({ cpu, text, lines, readBefore: before.read, overrunBefore: before.overrun });
      busiest = Math.max(busiest, lines);
      this.stats.events += lines;
    }
    if (lost) {
      // Resync first (durably), so the new baseline below cannot hide the loss if we die in between.
      this.stats.lost++;
      this.log.error({ code: 'TM_ERR_TRACKING_LOST', reason: lost }, 'blocktrace lost events; the volume will be resynced');
      await this.opts.onLost(lost);
    }
    if (taken.length > 0 || lost || (this.unsaved && Date.now() - this.savedAt >= SAVE_SHRUNK_MS)) await this.save({ ...this.meta, cpus });
    for (const t of taken) {
      const consumed = await inst.consume(t.cpu, t.text);
      const after = await inst.stats(t.cpu);
      if (consumed !== t.text || after.read !== t.readBefore + t.lines) {
        // Something besides what we saved was consumed (a racing reader, or an overrun in between).
        parseRqEvents(consumed.slice(0, consumed.lastIndexOf('\n') + 1), onWrite);
        // Name the cause the operator can act on (a bigger buffer) when the kernel counted an overrun meanwhile.
        // A loss this drain already declared (and resynced for) explains the difference: not reported twice.
        if (!lost) {
          const overran = after.overrun - t.overrunBefore;
          lost = overran > 0
            ? `cpu ${t.cpu}: the kernel buffer overran while it was read, ${overran} events lost`
            : `cpu ${t.cpu}: consumed events differ from those recorded`;
          this.stats.lost++;
          this.log.error({ code: 'TM_ERR_TRACKING_LOST', reason: lost }, 'blocktrace lost events; the volume will be resynced');
          await this.opts.onLost(lost);
        }
        await this.save({ ...this.meta, cpus: { ...this.meta.cpus, [t.cpu]: { read: after.read, overrun: after.overrun, dropped: after.dropped } } });
      }
    }
    this.busy = busiest * EVENT_BYTES > (this.meta.actualKiB * 1024) / 4;
    this.stats.drains++;
    this.stats.lastDrainMs = performance.now() - t0;
    return taken.reduce((n, t) => n + t.lines, 0);
  }

  /** Just before the capture: what completed so far is in the snapshot about to be taken. */
  async beforeCapture(): Promise<void> {
    await this.locked(async () => {
      await this.drainNow();
      this.keep = [];
    });
  }

  /**
   * Dirty blocks from `view`, up to maxBytes. With `cont`, the same view as the last call: go on with the
   * blocks that were dirty when it was taken (a point larger than one differential), so a steady stream of
   * new writes cannot keep the point from completing.
   */
  async collect(view: VolumeReader, maxBytes: number, cont = false): Promise<Collection> {
    const { picked, more } = await this.locked(async () => {
      this.keep ??= []; // no beforeCapture: keep whatever this drain finds
      await this.drainNow();
      // The point's blocks: what was dirty when the view was taken (plus what completed around it).
      if (!cont || !this.point) this.point = this.map.copy();
      const runs: Array<[number, number]> = [];
      let bytes = 0;
      let blocks = 0;
      for (const [first, end] of this.point.runs(MAX_EXTENT / this.blockSize)) {
        if (bytes >= maxBytes) break;
        runs.push([first, end]);
        bytes += (end - first) * this.blockSize;
        blocks += end - first;
      }
      // `more`: blocks of this point left for the next differential. Blocks dirtied since belong to the
      // next point and do not make this one incomplete.
      return { picked: runs, more: this.point.count > blocks };
    });
    const extents = await readRuns(view, picked, this.blockSize);
    return {
      extents,
      bytes: extents.reduce((n, e) => n + e.length, 0),
      more,
      commit: () => this.locked(async () => {
        for (const [first, end] of picked) {
          this.map.clear(first, end);
          this.point?.clear(first, end);
        }
        // Drained since the capture: maybe not in the view; dirty again. While the point goes on, the list
        // goes on too: a block drained now may be picked (from the old view) by a later differential.
        for (const [first, end] of this.keep ?? []) this.map.set(first, end);
        if (!more) this.keep = null;
        if (!more) this.point = null;
        this.unsaved = true;
      }),
    };
  }

  async invalidate(ranges: { offset: number; length: number }[]): Promise<void> {
    await this.locked(async () => {
      for (const r of ranges) this.map.set(Math.floor(r.offset / this.blockSize), Math.ceil((r.offset + r.length) / this.blockSize));
      await this.save();
    });
  }

  /** Writes made during a resync stay in the map and are sent after it (Step II): nothing to adopt. */
  async adoptBaseline(): Promise<void> {}

  /** Settled: not dirty once every event completed so far is drained (a write before the read is in the map). */
  async settled(firstBlock: number, leaves: BigUint64Array): Promise<boolean[]> {
    await this.drain();
    return Array.from(leaves, (_, i) => !this.map.has(firstBlock + i));
  }

  /** Blocks waiting to be captured (the bitmap the agent falls back to when it cannot journal data). */
  get dirtyBlocks(): number {
    return this.map.count;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    // Leave the instance recording: events written until the agent is back wait in the kernel.
    await this.drain().catch((e: Error) => this.log.error({ err: e.message }, 'final blocktrace drain failed'));
    await this.locked(() => this.save());
  }
}
