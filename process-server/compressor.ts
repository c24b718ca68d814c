// LZ4 for the process server's cache, per extent, kept raw where it does not pay (extent-codec's
// lz4KeepLimit: under 95% of the raw size or not at all), with the ratio and the time it costs counted
// per volume for the status snapshot.
//
// The LZ4 is native/lz4.ts (the `lz4` CLI's library, output into reused buffers; it replaced lz4-napi,
// which allocated and zeroed a fresh buffer per call and took 8-15x longer per byte on random data).
// Compression is given the keep limit, so on incompressible data it stops as soon as its output passes
// 95% of the input instead of finishing a block that would be thrown away.
//
// Where it runs (measured on this 2-core machine; docs/OPERATIONS.md "Compression" has the tables):
// extents of INLINE_BELOW bytes or more go to the libuv thread pool, so with two in flight both cores
// compress; smaller ones are cheaper inline than handed to a thread. At most `threads` extents are on
// the pool at once, process-wide: enough for every core, and the pool (4 threads by default) keeps room
// for the cache's file writes and fsyncs.
//
// An extent of at least PROBE_FROM bytes is first probed: three 4 KiB samples (start, middle, end)
// compressed inline. Where together they do not reach the keep bar, the extent is stored raw without
// compressing the rest (counted in probeSkippedExtents); a mixed extent with any compressible sample is
// compressed whole.
//
// Adaptive, per volume: compression is judged over windows of `windowBytes` compressed whole (extents the
// probe turned away cost almost nothing and are not counted). A window that saved
// less than `minSavingPercent` of its bytes (data LZ4 barely shrinks, such as a database's compressed
// pages or fio's buffers, which lz4 -1 takes to 95%: full compression cost for 5% of the bytes) puts the
// volume to rest: its next `restBytes` are stored raw without being compressed or probed, then a window is
// tried again. minSavingPercent 0 never rests (every byte LZ4 saves is worth its CPU: a thin link).
import { availableParallelism } from 'node:os';
import { lz4Compress, lz4CompressAsync } from '../native/lz4.js';
import { LZ4_KEEP_RAW_AT, lz4KeepLimit, storedOf } from '../proto/extent-codec.js';
import type { ExtentRecord } from '../proto/hrl.js';

/** Extents smaller than this are compressed on the event loop. */
export const INLINE_BELOW = 64 * 1024;
/** Extents of at least this size are probed with samples before being compressed whole. */
export const PROBE_FROM = 16 * 1024;
const SAMPLE = 4096;

/** When a volume's compression rests (see the top of this file). */
export interface AdaptiveOptions {
  /** A window that saves less than this share of its bytes puts the volume to rest; 0: never. */
  minSavingPercent: number;
  /** Bytes of extents tried per judgement. */
  windowBytes: number;
  /** Bytes stored raw, untried, before the next window. */
  restBytes: number;
}

export const ADAPTIVE_WINDOW_BYTES = 32 * 1024 * 1024;
export const ADAPTIVE_REST_BYTES = 512 * 1024 * 1024;

export interface CompressionStats {
  /** Bytes of extent data received (uncompressed). */
  rawBytes: number;
  /** Bytes stored for them in the cache (and forwarded). */
  storedBytes: number;
  /** rawBytes / storedBytes (1 when nothing was stored yet). */
  ratio: number;
  /**
   * Time spent compressing: each compression from hand-off to result (inline: on the event loop). An
   * upper bound of its CPU time (waiting for a core, or for the event loop to take a pooled result,
   * counts too); Node 20 has no per-thread CPU clock to do better.
   */
  cpuMs: number;
  /** Extents stored raw: LZ4 did not shrink them enough, or the volume's compression rested. */
  skippedExtents: number;
  /** Extents stored LZ4-compressed. */
  compressedExtents: number;
  /** Of skippedExtents, those stored raw because samples of them did not compress (never compressed whole). */
  probeSkippedExtents: number;
  /** `lz4`: extents are tried; `resting`: stored raw untried (the last window saved too little); `none`: configured off. */
  state: 'lz4' | 'resting' | 'none';
  /** What the last judged window saved, in % of its bytes (null before the first). */
  lastWindowSavingPercent: number | null;
  /** Times the volume was put to rest, and bytes stored raw untried while resting. */
  rests: number;
  restedBytes: number;
}

interface Counters {
  rawBytes: number;
  storedBytes: number;
  cpuNs: bigint;
  skippedExtents: number;
  compressedExtents: number;
  probeSkippedExtents: number;
  /** The window being tried: its raw bytes and what was stored for them. */
  windowRaw: number;
  windowStored: number;
  /** Bytes still to store raw before the next window; > 0 while resting. */
  restLeft: number;
  lastWindowSavingPercent: number | null;
  rests: number;
  restedBytes: number;
}

export class Compressor {
  private readonly counters = new Map<string, Counters>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  readonly adaptive: AdaptiveOptions;

  constructor(readonly mode: 'lz4' | 'none', adaptive: Partial<AdaptiveOptions> = {}, readonly threads: number = availableParallelism()) {
    this.adaptive = { minSavingPercent: 0, windowBytes: ADAPTIVE_WINDOW_BYTES, restBytes: ADAPTIVE_REST_BYTES, ...adaptive };
  }

  /** The stored form of a verified raw extent (`e` describes it raw). */
  async pack(volumeId: string, e: ExtentRecord, raw: Buffer): Promise<{ record: ExtentRecord; stored: Buffer }> {
    const c = this.of(volumeId);
    const plain: ExtentRecord = { ...e, compression: 'NONE', storedLength: raw.length };
    c.rawBytes += raw.length;
    if (this.mode === 'none' || raw.length === 0) {
      c.storedBytes += raw.length;
      return { record: plain, stored: raw };
    }
    if (c.restLeft > 0) {
      c.restLeft -= raw.length;
      c.restedBytes += raw.length;
      c.storedBytes += raw.length;
      c.skippedExtents++;
      return { record: plain, stored: raw };
    }
    const probed = c.probeSkippedExtents;
    const out = await this.tried(c, plain, raw);
    // Judged on what was compressed whole (what costs the CPU): an extent the probe turned away cost
    // almost nothing, and counting it would rest a volume of mixed encrypted and compressible data.
    if (c.probeSkippedExtents === probed) this.judge(c, raw.length, out.stored.length);
    return out;
  }

  /** A window's worth tried: rest when it saved too little. */
  private judge(c: Counters, raw: number, stored: number): void {
    c.windowRaw += raw;
    c.windowStored += stored;
    if (c.windowRaw < this.adaptive.windowBytes) return;
    const saving = 100 * (1 - c.windowStored / c.windowRaw);
    c.lastWindowSavingPercent = Math.round(saving * 10) / 10;
    c.windowRaw = 0;
    c.windowStored = 0;
    if (saving < this.adaptive.minSavingPercent) {
      c.restLeft = this.adaptive.restBytes;
      c.rests++;
    }
  }

  /** Probed, then compressed where it pays. */
  private async tried(c: Counters, plain: ExtentRecord, raw: Buffer): Promise<{ record: ExtentRecord; stored: Buffer }> {
    if (raw.length >= PROBE_FROM) {
      const t0 = process.hrtime.bigint();
      const pays = samplesCompress(raw);
      c.cpuNs += process.hrtime.bigint() - t0;
      if (!pays) {
        c.storedBytes += raw.length;
        c.skippedExtents++;
        c.probeSkippedExtents++;
        return { record: plain, stored: raw };
      }
    }
    const limit = lz4KeepLimit(raw.length);
    let packed: Buffer | null;
    let ns: bigint;
    if (raw.length < INLINE_BELOW) {
      const t0 = process.hrtime.bigint();
      packed = lz4Compress(raw, limit);
      ns = process.hrtime.bigint() - t0;
    } else {
      await this.slot();
      const t0 = process.hrtime.bigint();
      try {
        packed = await lz4CompressAsync(raw, limit);
      } finally {
        ns = process.hrtime.bigint() - t0;
        this.release();
      }
    }
    c.cpuNs += ns;
    const out = storedOf(plain, raw, packed);
    c.storedBytes += out.stored.length;
    if (out.record.compression === 'LZ4') c.compressedExtents++;
    else c.skippedExtents++;
    return out;
  }

  stats(volumeId: string): CompressionStats {
    const c = this.of(volumeId);
    return {
      rawBytes: c.rawBytes,
      storedBytes: c.storedBytes,
      ratio: c.storedBytes > 0 ? Math.round((100 * c.rawBytes) / c.storedBytes) / 100 : 1,
      cpuMs: Math.round(Number(c.cpuNs / 1000n)) / 1000,
      skippedExtents: c.skippedExtents,
      compressedExtents: c.compressedExtents,
      probeSkippedExtents: c.probeSkippedExtents,
      state: this.mode === 'none' ? 'none' : c.restLeft > 0 ? 'resting' : 'lz4',
      lastWindowSavingPercent: c.lastWindowSavingPercent,
      rests: c.rests,
      restedBytes: c.restedBytes,
    };
  }

  private of(volumeId: string): Counters {
    let c = this.counters.get(volumeId);
    if (!c) this.counters.set(volumeId, (c = { rawBytes: 0, storedBytes: 0, cpuNs: 0n, skippedExtents: 0, compressedExtents: 0, probeSkippedExtents: 0, windowRaw: 0, windowStored: 0, restLeft: 0, lastWindowSavingPercent: null, rests: 0, restedBytes: 0 }));
    return c;
  }

  private slot(): Promise<void> {
    if (this.running < this.threads) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next(); // the slot passes straight to the next waiter
    else this.running--;
  }
}

/** Whether samples of the extent's start, middle and end, compressed together, would be stored compressed. */
function samplesCompress(raw: Buffer): boolean {
  const at = [0, Math.floor((raw.length - SAMPLE) / 2 / SAMPLE) * SAMPLE, raw.length - SAMPLE];
  let packed = 0;
  // a sample that does not get under the bar counts as its full size (the block was abandoned there)
  for (const a of at) packed += lz4Compress(raw.subarray(a, a + SAMPLE), SAMPLE)?.length ?? SAMPLE;
  return packed < at.length * SAMPLE * LZ4_KEEP_RAW_AT;
}
