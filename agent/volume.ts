// Access to a protected volume: a block device or an image file, read by offset.
import { promises as fsp } from 'node:fs';
import { volumeSize } from '../common/device.js';
import { wrap } from '../common/errors.js';
import { dropCache } from '../native/index.js';

/** The largest page-cache folio (PMD size on x86-64 and arm64 with 4 KiB pages). */
const FOLIO_MAX = 2 * 1024 * 1024;

export interface VolumeReader {
  readonly sizeBytes: number;
  /** Read `length` bytes at `offset` into `into` (or a new buffer); short only at the end of the volume. */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
}

export class Volume implements VolumeReader {
  /**
   * `uncached`: a block device. A filesystem mounted on it writes file data through its own page cache,
   * not the device's, so device pages read earlier go stale in the device's cache; every read first drops
   * the range's cached pages (a buffered read would otherwise return old data).
   */
  private constructor(readonly path: string, private readonly fh: fsp.FileHandle, readonly sizeBytes: number, private readonly base = 0, private readonly uncached = false) {}

  static async open(p: string): Promise<Volume> {
    try {
      const size = await volumeSize(p);
      const fh = await fsp.open(p, 'r');
      return new Volume(p, fh, size, 0, (await fh.stat()).isBlockDevice());
    } catch (e) {
      throw wrap(e, `open volume ${p}`, { path: p });
    }
  }

  /** A window of `sizeBytes` at `base` in a file: a volume inside a snapshot of its disk image. */
  static async openAt(p: string, base: number, sizeBytes: number): Promise<Volume> {
    try {
      return new Volume(p, await fsp.open(p, 'r'), sizeBytes, base);
    } catch (e) {
      throw wrap(e, `open ${p}`, { path: p });
    }
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const n = Math.max(0, Math.min(length, this.sizeBytes - offset));
    const buf = into && into.length >= n ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    if (this.uncached && n > 0) {
      // Whole folios only are dropped, and the device's cache holds large ones (seen: 1 MiB after a
      // sequential read): widen the range to the largest folio (2 MiB) or a small read stays stale.
      const from = Math.floor((this.base + offset) / FOLIO_MAX) * FOLIO_MAX;
      dropCache(this.fh.fd, from, Math.ceil((this.base + offset + n) / FOLIO_MAX) * FOLIO_MAX - from);
    }
    let done = 0;
    while (done < n) {
      const { bytesRead } = await this.fh.read(buf, done, n - done, this.base + offset + done);
      if (bytesRead === 0) break; // the volume shrank under us; the next cycle sees the new size
      done += bytesRead;
    }
    return done === n ? buf : buf.subarray(0, done);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
