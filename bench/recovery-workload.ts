// The master target side of the recovery benchmark, in-process and on the real code path: a replica volume
// with its DiffStore (staging folder), block hash table, RetentionLog and Applier, fed differentials that
// HrlWriter writes into the staging folder with each extent stored as the process server stores it
// (compressExtent: LZ4 where it pays). The workload is a random-write pattern shaped like the agent's
// output: blocks dirtied by small and large writes, coalesced into sorted runs of at most 1 MiB.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { silentLogger } from '../common/log.js';
import { Applier } from '../master-target/applier.js';
import { currentPoint, type MtVolumeState, type MtStore } from '../master-target/volume-state.js';
import { MtVolume } from '../master-target/volume.js';
import type { RecoverySource } from '../master-target/recover.js';
import { ReplicaHashes } from '../master-target/replica-hashes.js';
import { Replica } from '../master-target/replica.js';
import type { BeforeImageBatch } from '../master-target/retention/before-images.js';
import { RetentionLog, type RetentionOptions } from '../master-target/retention/retention-log.js';
import { ficlone } from '../native/index.js';
import { DiffStore } from '../proto/diff-store.js';
import { compressExtent } from '../proto/extent-codec.js';
import { HrlWriter } from '../proto/hrl.js';
import { MiB } from './harness.js';
import { textData } from './volume.js';

export const BLOCK = 4096;
/** The agent's largest extent (agent/trackers/blocktrace.ts MAX_EXTENT). */
const MAX_RUN_BLOCKS = (1 * MiB) / BLOCK;
const POOL_BYTES = 16 * MiB;
const log = silentLogger();

export interface WorkloadSpec {
  name: string;
  /** Writes land in [regionOffset, regionOffset + regionBytes): the whole volume, or a hot region. */
  regionOffset: number;
  regionBytes: number;
  minBytes: number;
  maxBytes: number;
}

/**
 * Deterministic differentials. Each changes between minBytes and maxBytes: half of it by small random
 * writes (4-16 KiB, a database's pages), half by large ones (64 KiB-1 MiB, logs and file copies); blocks
 * written twice in one differential count once, as in the agent's dirty map. Data is half log-like text
 * (LZ4 shrinks it) and half random bytes (LZ4 cannot), sliced from pools.
 */
export class Workload {
  private x: number;
  private static pools: { text: Buffer; random: Buffer } | null = null;

  constructor(readonly spec: WorkloadSpec, seed: number) {
    this.x = (seed * 2654435761) >>> 0 || 1;
  }

  private rnd(n: number): number {
    this.x ^= this.x << 13;
    this.x >>>= 0;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    this.x >>>= 0;
    return this.x % n;
  }

  private static pool(): { text: Buffer; random: Buffer } {
    Workload.pools ??= { text: textData(POOL_BYTES, 11), random: randomBytes(POOL_BYTES) };
    return Workload.pools;
  }

  /** Sorted, non-overlapping extents of the next differential. */
  next(): Array<{ offset: number; length: number }> {
    const { regionOffset, regionBytes, minBytes, maxBytes } = this.spec;
    const regionBlocks = Math.floor(regionBytes / BLOCK);
    const target = Math.floor((minBytes + this.rnd(maxBytes - minBytes + 1)) / BLOCK);
    const dirty = new Set<number>();
    let small = 0;
    while (dirty.size < target) {
      const isSmall = small * 2 < target;
      const len = Math.min(regionBlocks, isSmall ? 1 + this.rnd(4) : 16 + this.rnd(241));
      const first = this.rnd(regionBlocks - len + 1);
      for (let b = first; b < first + len && dirty.size < target; b++) dirty.add(b);
      if (isSmall) small += len;
    }
    const blocks = [...dirty].sort((a, b) => a - b);
    const out: Array<{ offset: number; length: number }> = [];
    for (let i = 0; i < blocks.length; ) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && j - i < MAX_RUN_BLOCKS) j++;
      out.push({ offset: regionOffset + blocks[i]! * BLOCK, length: (j - i) * BLOCK });
      i = j;
    }
    return out;
  }

  /** `length` bytes of text or random data. */
  data(length: number): Buffer {
    const p = Workload.pool();
    const pool = this.rnd(2) === 0 ? p.text : p.random;
    const at = this.rnd((pool.length - length) / BLOCK + 1) * BLOCK;
    return pool.subarray(at, at + length);
  }

  /** Volume content: log text and random data over the first two thirds, zeros (free space) after. */
  static fillChunk(pos: number, length: number, sizeBytes: number): Buffer {
    if (pos >= Math.floor((sizeBytes * 2) / 3 / MiB) * MiB) return Buffer.alloc(length);
    const p = Workload.pool();
    const pool = Math.floor(pos / (4 * MiB)) % 2 === 0 ? p.text : p.random;
    const at = (pos * 7) % (pool.length - length + 1);
    return Buffer.from(pool.subarray(at - (at % BLOCK), at - (at % BLOCK) + length));
  }
}

/**
 * The retention log with the time the apply path waits for before-images counted: in a batch's add() and
 * durable() (the applier's way; beforeApply runs one batch too). The real code runs.
 */
export class TimedRetentionLog extends RetentionLog {
  beforeApplySeconds = 0;

  private async timed<T>(p: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await p();
    } finally {
      this.beforeApplySeconds += (performance.now() - t0) / 1000;
    }
  }

  override batch(...args: Parameters<RetentionLog['batch']>): BeforeImageBatch {
    const b = super.batch(...args);
    const add = b.add.bind(b);
    const durable = b.durable.bind(b);
    b.add = (...a) => this.timed(() => add(...a));
    b.durable = () => this.timed(durable);
    return b;
  }
}

export interface ApplyRun {
  fromSeq: number;
  toSeq: number;
  diffs: number;
  dataBytes: number;
  seconds: number;
  cpuSeconds: number;
  retention: boolean;
  /** Time inside RetentionLog.beforeApply, and segment bytes it added. */
  beforeApplySeconds: number;
  segmentBytes: number;
}

/** One replica on the master target with everything the daemon attaches to it (master-target/server.ts attach()). */
export class BenchVolume {
  store!: MtStore;
  replica!: Replica;
  hashes!: ReplicaHashes;
  retention!: TimedRetentionLog;
  private applier: Applier | null = null;
  private stagedSeq = 0;
  /** Raw (uncompressed) bytes each differential changes, and in how many extents. */
  readonly dataBytes = new Map<number, number>();
  readonly extents = new Map<number, number>();
  /** Wall seconds spent writing differentials into the staging folder (not part of any apply figure). */
  stageSeconds = 0;
  readonly replicaPath: string;
  private readonly storeDir: string;

  private constructor(readonly dir: string, readonly id: string, readonly sizeBytes: number) {
    this.replicaPath = path.join(dir, 'replica.img');
    this.storeDir = MtVolume.dir(path.join(dir, 'mt'), id);
  }

  /** A fully written replica (fill), or a reflink clone of another volume's replica and hash table. */
  static async create(dir: string, id: string, sizeBytes: number, retention: RetentionOptions, cloneOf?: BenchVolume): Promise<BenchVolume> {
    const v = new BenchVolume(dir, id, sizeBytes);
    await fsp.mkdir(v.storeDir, { recursive: true });
    if (cloneOf) {
      await ficlone(cloneOf.replicaPath, v.replicaPath);
      await fsp.copyFile(path.join(cloneOf.storeDir, 'replica-hashes.bin'), path.join(v.storeDir, 'replica-hashes.bin'));
    } else {
      const fh = await fsp.open(v.replicaPath, 'wx', 0o600);
      try {
        for (let pos = 0; pos < sizeBytes; pos += 4 * MiB) await fh.write(Workload.fillChunk(pos, Math.min(4 * MiB, sizeBytes - pos), sizeBytes), 0, Math.min(4 * MiB, sizeBytes - pos), pos);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    v.store = new DiffStore<MtVolumeState>(v.storeDir, id, log);
    await v.store.open();
    await v.store.adopt({ volumeId: id, sizeBytes, blockSize: BLOCK, replicationId: `bench-${id}` }, { resyncing: false });
    v.replica = await Replica.open(v.replicaPath, sizeBytes);
    v.hashes = new ReplicaHashes(v.storeDir, sizeBytes, BLOCK, log);
    await v.hashes.open(v.replica); // loads the cloned table, or hashes the new replica
    v.retention = new TimedRetentionLog(path.join(v.storeDir, 'retention'), id, { sizeBytes, blockSize: BLOCK }, retention, log);
    await v.retention.open();
    return v;
  }

  get doneSeq(): number {
    return this.store.doneSeq;
  }

  /** Write `count` differentials into the staging folder, as the receiver commits them. */
  async stage(count: number, wl: Workload, atMs: (seq: number) => number): Promise<void> {
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const seq = ++this.stagedSeq;
      const end = atMs(seq);
      const w = await HrlWriter.create(this.storeDir, { volumeId: this.id, seq, startTimeMs: end - 1000, endTimeMs: end, volumeSize: this.sizeBytes, blockSize: BLOCK, consistency: 'CRASH', flags: 0, tags: [] });
      let bytes = 0;
      const extents = wl.next();
      try {
        for (const e of extents) {
          const raw = wl.data(e.length);
          const { record, stored } = await compressExtent({ ...e, crc32c: crc(raw), compression: 'NONE', storedLength: raw.length }, raw);
          await w.append(record, stored);
          bytes += e.length;
        }
        await w.commit();
      } catch (e) {
        await w.abort();
        throw e;
      }
      this.dataBytes.set(seq, bytes);
      this.extents.set(seq, extents.length);
      // Backlog case: the file is read back and verified by the applier (no in-memory copy).
      await this.store.added(seq, null);
    }
    this.stageSeconds += (performance.now() - t0) / 1000;
  }

  /** Apply everything staged, with or without retention; timed from the first differential to the last fsync. */
  async apply(withRetention: boolean): Promise<ApplyRun> {
    const fromSeq = this.doneSeq + 1;
    const toSeq = this.stagedSeq;
    const ba0 = this.retention.beforeApplySeconds;
    this.applier = new Applier(this.id, this.store, this.replica, this.hashes, {
      applied: () => {},
      damaged: (seq) => { throw new Error(`differential ${seq} was found damaged`); },
    }, log, withRetention ? this.retention : null);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await this.applier.kick();
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    if (this.doneSeq !== toSeq) throw new Error(`${this.id}: applied up to ${this.doneSeq}, staged up to ${toSeq}: ${this.applier.stats.lastError ?? 'stopped'}`);
    let dataBytes = 0;
    for (let s = fromSeq; s <= toSeq; s++) dataBytes += this.dataBytes.get(s) ?? 0;
    return {
      fromSeq, toSeq, diffs: toSeq - fromSeq + 1, dataBytes, seconds, retention: withRetention,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      beforeApplySeconds: this.retention.beforeApplySeconds - ba0,
      // Counted from the segments themselves: a batch after one without retention starts a new chain.
      segmentBytes: this.retention.segments.filter((s) => s.fromSeq >= fromSeq && s.toSeq <= toSeq).reduce((n, s) => n + s.bytes, 0),
    };
  }

  /** What master-target/server.ts recoverySource() hands to recoverPoint. */
  source(): RecoverySource {
    return {
      volumeId: this.id,
      replicaPath: this.replicaPath,
      sizeBytes: this.sizeBytes,
      blockSize: BLOCK,
      retention: this.retention,
      doneSeq: () => this.store.doneSeq,
      currentPoint: () => currentPoint(this.store.state),
      hashes: () => this.hashes.hashes,
      hold: (fn) => (this.applier ? this.applier.exclusive(fn) : fn()),
    };
  }

  segmentFiles(): string[] {
    return this.retention.segments.map((s) => s.file);
  }

  async close(): Promise<void> {
    await this.applier?.close();
    await this.replica.close();
  }
}
