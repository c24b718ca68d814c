// Reading a differential file back without fresh memory. A file of a whole differential (32 MiB of data
// and its headers by default) is larger than glibc's largest mmap threshold, so a buffer for it is mapped
// afresh for every read, and on this kind of VM each page first touched costs ~15 us: about 180 ms of CPU
// to read one 32 MiB differential, against ~30 ms into memory already touched. That cost lands on the hop
// that is already behind (its differentials no longer fit in RecentDiffs), so it made a backlog grow
// faster. Files are therefore read into a few reused buffers, verified there, and their extents copied
// out: large ones into the extent pool, given back by their consumer (Extent.release), small ones packed
// into shared slabs left to the collector.
import { promises as fsp } from 'node:fs';
import { extentPool } from '../common/buffer-pool.js';
import type { Diff, Extent } from './hrl.js';

/** Read buffers kept for the next read; more at once (several volumes read together) are allocated. */
const KEEP_READ_BUFFERS = 2;
/**
 * Nor is a buffer larger than this kept (a whole differential at the default maxDiffBytes, 32 MiB, and its
 * headers fit): a larger file, such as a resync window's, is read into a buffer of its own, as before.
 */
const KEEP_READ_BYTES = 48 * 1024 * 1024;
/** Small extents (not pooled) are packed into slabs of this size. */
const SLAB_BYTES = 256 * 1024;

const free: Buffer[] = [];

/**
 * Call `use` with the whole content of `file`, read into a reused buffer that is taken back when `use`
 * returns: `use` must not keep any view of it (detach() copies a decoded differential out). File system
 * errors are thrown as they come (callers add their context).
 */
export async function withFileBytes<T>(file: string, use: (bytes: Buffer) => T | Promise<T>): Promise<T> {
  const fh = await fsp.open(file, 'r');
  let buf: Buffer | null = null;
  try {
    const size = (await fh.stat()).size;
    buf = takeBuffer(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(buf, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    // A file cut short while read is seen as such by the decoder (it checks the trailer and lengths).
    return await use(buf.subarray(0, done));
  } finally {
    if (buf) giveBuffer(buf);
    await fh.close();
  }
}

function takeBuffer(size: number): Buffer {
  const i = free.findIndex((b) => b.length >= size);
  if (i >= 0) return free.splice(i, 1)[0]!;
  return Buffer.allocUnsafeSlow(size);
}

function giveBuffer(buf: Buffer): void {
  if (buf.length > KEEP_READ_BYTES) return;
  free.push(buf);
  // Keep the largest few: a bigger file needs a bigger one, and a smaller file fits any.
  free.sort((a, b) => b.length - a.length);
  free.length = Math.min(free.length, KEEP_READ_BUFFERS);
}

/**
 * A decoded differential whose extents are views of a buffer about to be reused, with its extent data
 * copied out: an extent the pool serves into a pooled buffer, released once by its consumer (the sender
 * at the receiver's ack, the applier after its commit) or left to the collector; smaller ones side by
 * side in slabs.
 */
export function detach(d: Diff): Diff {
  let slab: Buffer | null = null;
  let at = 0;
  const extents = d.extents.map((e): Extent => {
    const n = e.data.length;
    if (extentPool.pools(n)) {
      const data = extentPool.take(n);
      e.data.copy(data);
      let given = false; // once: a second give after the pool handed it out again would free its new holder's
      return { ...e, data, release: () => { if (!given) extentPool.give(data); given = true; } };
    }
    if (!slab || at + n > slab.length) {
      slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, n));
      at = 0;
    }
    const data = slab.subarray(at, at + n);
    e.data.copy(data);
    at += n;
    return { ...e, data };
  });
  return { ...d, extents };
}
