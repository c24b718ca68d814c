// LZ4 for the process server's cache, per extent, kept raw where it does not pay (extent-codec's
// chooseStored: under 95% of the raw size or not at all), with the ratio and the time it costs counted
// per volume for the status snapshot.
//
// Where it runs (measured on this 2-core machine; docs/OPERATIONS.md "Compression" has the tables):
// lz4-napi's async `compress` runs on the libuv thread pool, and with two extents in flight it uses both
// cores (1 MiB extents of mixed files: ~720 MiB/s in memory, against ~210 MiB/s for `compressSync` on
// the event loop and ~440 MiB/s for `compressSync` in two worker threads with four in flight). Below
// 64 KiB an extent is cheaper to compress inline than to hand to a thread (4 KiB: ~365 MiB/s inline,
// ~75-105 async). At most `threads` extents are on the pool at once, process-wide: enough for every
// core (four in flight gained <10% more), and the pool (4 threads by default) keeps room for the
// cache's file writes and fsyncs.
//
// Incompressible data is the expensive case: lz4-napi takes 8-15x longer per byte on random data than
// on text (1 MiB: ~21-40 ms against ~3 ms here), to end up storing it raw anyway. So an extent of at
// least PROBE_FROM bytes is first probed: three 4 KiB samples (start, middle, end) compressed inline.
// Where together they do not reach chooseStored's bar, the extent is stored raw without compressing the
// rest (counted in probeSkippedExtents); a mixed extent with any compressible sample is compressed whole.
import { availableParallelism } from 'node:os';
import { compress, compressSync } from 'lz4-napi';
import { chooseStored, LZ4_KEEP_RAW_AT } from '../proto/extent-codec.js';
import type { ExtentRecord } from '../proto/hrl.js';

/** Extents smaller than this are compressed on the event loop. */
export const INLINE_BELOW = 64 * 1024;
/** Extents of at least this size are probed with samples before being compressed whole. */
export const PROBE_FROM = 16 * 1024;
const SAMPLE = 4096;

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
  /** Extents LZ4 did not shrink enough, stored raw. */
  skippedExtents: number;
  /** Extents stored LZ4-compressed. */
  compressedExtents: number;
  /** Of skippedExtents, those stored raw because samples of them did not compress (never compressed whole). */
  probeSkippedExtents: number;
}

interface Counters {
  rawBytes: number;
  storedBytes: number;
  cpuNs: bigint;
  skippedExtents: number;
  compressedExtents: number;
  probeSkippedExtents: number;
}

export class Compressor {
  private readonly counters = new Map<string, Counters>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly mode: 'lz4' | 'none', readonly threads: number = availableParallelism()) {}

  /** The stored form of a verified raw extent (`e` describes it raw). */
  async pack(volumeId: string, e: ExtentRecord, raw: Buffer): Promise<{ record: ExtentRecord; stored: Buffer }> {
    const c = this.of(volumeId);
    const plain: ExtentRecord = { ...e, compression: 'NONE', storedLength: raw.length };
    c.rawBytes += raw.length;
    if (this.mode === 'none' || raw.length === 0) {
      c.storedBytes += raw.length;
      return { record: plain, stored: raw };
    }
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
    let packed: Buffer;
    let ns: bigint;
    if (raw.length < INLINE_BELOW) {
      const t0 = process.hrtime.bigint();
      packed = compressSync(raw);
      ns = process.hrtime.bigint() - t0;
    } else {
      await this.slot();
      const t0 = process.hrtime.bigint();
      try {
        packed = await compress(raw);
      } finally {
        ns = process.hrtime.bigint() - t0;
        this.release();
      }
    }
    c.cpuNs += ns;
    const out = chooseStored(plain, raw, packed);
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
    };
  }

  private of(volumeId: string): Counters {
    let c = this.counters.get(volumeId);
    if (!c) this.counters.set(volumeId, (c = { rawBytes: 0, storedBytes: 0, cpuNs: 0n, skippedExtents: 0, compressedExtents: 0, probeSkippedExtents: 0 }));
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
  for (const a of at) packed += compressSync(raw.subarray(a, a + SAMPLE)).length;
  return packed < at.length * SAMPLE * LZ4_KEEP_RAW_AT;
}
