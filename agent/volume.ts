// Access to a protected volume: a block device or an image file, read by offset.
import { constants, promises as fsp } from 'node:fs';
import { volumeSize } from '../common/device.js';
import { tmError, wrap } from '../common/errors.js';
import { readDirect, tryLock } from '../native/index.js';

export interface VolumeReader {
  readonly sizeBytes: number;
  /**
   * True when read() reads into an `into` big enough (a subarray of it is returned): a caller may then
   * keep buffers to read into again. A block device's direct read allocates aligned memory of its own.
   */
  readonly readsInto?: boolean;
  /**
   * `length` bytes at `offset`; short only at the end of the volume. `into` is a buffer the caller has
   * done with, which may be read into instead of allocating; always use the buffer returned.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
}

export class Volume implements VolumeReader {
  /** Direct reads still on the libuv pool: close() waits for them, or the fd could be reused under them. */
  private readonly pending = new Set<Promise<unknown>>();
  private closing: Promise<void> | undefined;

  /**
   * `direct`: a block device, opened with O_DIRECT and read with readDirect. A filesystem mounted on it
   * writes file data around the device's page cache, so device pages read earlier go stale there, and
   * holds metadata in that cache newer than the disk; only a read that skips the cache returns what is on
   * the device. Image files are read through the page cache: a file has one cache, which writes go through.
   */
  private constructor(readonly path: string, private readonly fh: fsp.FileHandle, readonly sizeBytes: number, private readonly base = 0, private readonly direct = false) {}

  get readsInto(): boolean {
    return !this.direct;
  }

  static async open(p: string): Promise<Volume> {
    try {
      const size = await volumeSize(p);
      const isDevice = (await fsp.stat(p)).isBlockDevice();
      const fh = await fsp.open(p, isDevice ? constants.O_RDONLY | constants.O_DIRECT : 'r');
      // Checked again on the open file: the path could have been replaced in between.
      if ((await fh.stat()).isBlockDevice() !== isDevice) {
        await fh.close();
        throw tmError('TM_ERR_IO', 'the volume changed from file to block device or back while it was opened', { path: p });
      }
      // A shared lock on an image file marks it as a protected source: recovery refuses to write it
      // (master-target/recovery-outputs.ts). Devices are left to udev's locking conventions.
      if (!isDevice) tryLock(fh.fd, false);
      return new Volume(p, fh, size, 0, isDevice);
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
    if (this.closing) throw tmError('TM_ERR_CLOSED', `read of volume ${this.path} after close`, { path: this.path });
    const n = Math.max(0, Math.min(length, this.sizeBytes - offset));
    if (this.direct) {
      if (n === 0) return Buffer.alloc(0);
      const p = readDirect(this.fh.fd, this.base + offset, n);
      this.pending.add(p);
      try {
        return await p; // short if the device shrank under us; the next cycle sees the new size
      } catch (e) {
        throw wrap(e, `read volume ${this.path}`, { path: this.path, offset, length: n });
      } finally {
        this.pending.delete(p);
      }
    }
    const buf = into && into.length >= n ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const { bytesRead } = await this.fh.read(buf, done, n - done, this.base + offset + done);
      if (bytesRead === 0) break; // the volume shrank under us; the next cycle sees the new size
      done += bytesRead;
    }
    return done === n ? buf : buf.subarray(0, done);
  }

  /** Idempotent; waits for direct reads in flight, then closes the file. */
  close(): Promise<void> {
    this.closing ??= Promise.allSettled([...this.pending]).then(() => this.fh.close());
    return this.closing;
  }
}
