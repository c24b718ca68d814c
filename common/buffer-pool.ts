// Buffers for extent data whose end of life is known, reused instead of allocated afresh. A fresh buffer
// costs page faults on this kind of VM (~15 us per 4 KiB page first touched) and, once it lives long
// enough to reach V8's old generation (a differential held until it is applied), a share of a full
// garbage collection; a daemon moving 100 MiB/s otherwise allocates and collects 100 MiB/s.
//
// Only buffers this pool made are ever taken back (give() ignores anything else, e.g. a slice of Node's
// shared 8 KiB pool), and the caller gives a buffer back only once nothing refers to it any more.

/** Buffers shorter than this are not pooled: Node's own small-buffer pool serves them. */
export const POOL_FROM = 32 * 1024;
/** Nor longer ones (an extent is at most 1 MiB; a frame body adds its header). */
export const POOL_CAP = 1024 * 1024 + 64 * 1024;

/**
 * A pooled buffer's capacity: its length rounded up to 4 KiB under 256 KiB, to 64 KiB above (compressed
 * extents of about one size then share a class; a body kept as is pins less than one step beyond it).
 */
export function capacityFor(len: number): number {
  const step = len < 256 * 1024 ? 4096 : 65536;
  return Math.ceil(len / step) * step;
}

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private readonly ours = new WeakSet<ArrayBuffer>();
  private freeBytes = 0;
  /** Counters for tests and benchmarks. */
  readonly stats = { made: 0, reused: 0, given: 0, dropped: 0 };

  private takenSinceTrim = 0;

  /**
   * `maxFreeBytes`: what a daemon keeps free. A master target gives a whole group's buffers back at once
   * after its commit; at 64 MiB half of them were dropped and allocated afresh at 100 MiB/s (192 MiB:
   * about a tenth; its CPU per GiB applied fell by about a sixth). `idleTrimMs`: a pool nothing was
   * taken from for a whole such period (checked once per period: after one to two of them) lets its free
   * buffers go, so a burst's memory is not kept forever.
   */
  constructor(readonly maxFreeBytes = 192 * 1024 * 1024, idleTrimMs = 30_000) {
    if (idleTrimMs > 0) setInterval(() => this.trimIdle(), idleTrimMs).unref();
  }

  /** Let every free buffer go to the collector if nothing was taken since the last call. */
  trimIdle(): void {
    if (this.takenSinceTrim === 0 && this.freeBytes > 0) {
      this.free.clear();
      this.freeBytes = 0;
    }
    this.takenSinceTrim = 0;
  }

  /** Whether `len` bytes would come from the pool (else take() allocates an ordinary buffer). */
  pools(len: number): boolean {
    return len >= POOL_FROM && len <= POOL_CAP;
  }

  /**
   * A buffer of exactly `len` bytes (contents undefined), reused when one of its class, or of a class at
   * most a quarter larger, is free (a body kept as is then pins at most that much beyond its class).
   */
  take(len: number): Buffer {
    if (!this.pools(len)) return Buffer.allocUnsafe(len);
    this.takenSinceTrim++;
    const cap = capacityFor(len);
    // Its own class, else the next ones up to a quarter larger (compressed extents vary in size).
    let ab: ArrayBuffer | undefined;
    for (let c = cap; !ab && c <= cap + cap / 4; c = capacityFor(c + 1)) ab = this.free.get(c)?.pop();
    if (ab) {
      this.freeBytes -= ab.byteLength;
      this.ours.add(ab);
      this.stats.reused++;
      return Buffer.from(ab, 0, len);
    }
    const fresh = Buffer.allocUnsafeSlow(cap);
    this.ours.add(fresh.buffer);
    this.stats.made++;
    return fresh.subarray(0, len);
  }

  /**
   * Take back a buffer take() returned (or a view of it), once nothing refers to it. Anything the pool
   * did not make is left to the garbage collector; so is a buffer past the pool's bound.
   */
  give(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (!this.ours.has(ab)) return;
    // Taken out of the set while free, so a second give() of the same buffer cannot pool it twice.
    this.ours.delete(ab);
    this.stats.given++;
    if (this.freeBytes + ab.byteLength > this.maxFreeBytes) {
      this.stats.dropped++;
      return;
    }
    let list = this.free.get(ab.byteLength);
    if (!list) this.free.set(ab.byteLength, (list = []));
    list.push(ab);
    this.freeBytes += ab.byteLength;
  }
}

/** The process's pool for received extent bodies and decompressed extents. */
export const extentPool = new BufferPool();
