// Access to a protected volume: a block device or an image file, read by offset.
import { promises as fsp } from 'node:fs';
import { volumeSize } from '../common/device.js';
import { wrap } from '../common/errors.js';

export interface VolumeReader {
  readonly sizeBytes: number;
  /** Read `length` bytes at `offset` into `into` (or a new buffer); short only at the end of the volume. */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
}

export class Volume implements VolumeReader {
  private constructor(readonly path: string, private readonly fh: fsp.FileHandle, readonly sizeBytes: number, private readonly base = 0) {}

  static async open(p: string): Promise<Volume> {
    try {
      const size = await volumeSize(p);
      const fh = await fsp.open(p, 'r');
      return new Volume(p, fh, size);
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
