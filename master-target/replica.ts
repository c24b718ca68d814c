// A replica volume on the master target: an image file or a block device, written by offset.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsyncDir } from '../common/durable.js';
import { tmError, wrap } from '../common/errors.js';
import { volumeSize } from '../common/device.js';
import { readMany, tryLock, writeMany } from '../native/index.js';
import { identityOf, replacedHow, type ReplicaIdentity } from '../common/replica-identity.js';

export class Replica {
  private constructor(readonly path: string, private readonly fh: fsp.FileHandle, readonly isDevice: boolean, readonly identity: ReplicaIdentity) {}

  /** Open an existing replica, checking it can hold `sizeBytes`. */
  static async open(p: string, sizeBytes: number): Promise<Replica> {
    try {
      const st = await fsp.stat(p);
      const size = await volumeSize(p);
      if (size < sizeBytes) throw tmError('TM_ERR_VOLUME_GEOMETRY', `replica ${p} holds ${size} bytes; the source has ${sizeBytes}`, { path: p });
      const fh = await fsp.open(p, 'r+');
      // Marks the image as a live replica: recovery refuses to write it (recovery-outputs.ts).
      if (!st.isBlockDevice()) tryLock(fh.fd, false);
      // The identity of what was opened (the descriptor), not of whatever the path names by now.
      const opened = await fh.stat({ bigint: true });
      return new Replica(p, fh, st.isBlockDevice(), identityOf(opened, opened.isBlockDevice() ? size : Number(opened.size)));
    } catch (e) {
      throw wrap(e, `open replica ${p}`, { path: p });
    }
  }

  /** A new image file that reads as zeros over `sizeBytes` (sparse: nothing is written). */
  static async createSparse(p: string, sizeBytes: number): Promise<Replica> {
    const fh = await fsp.open(p, 'wx', 0o600).catch((e) => { throw wrap(e, `create replica ${p}`, { path: p }); });
    try {
      await fh.truncate(sizeBytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsyncDir(path.dirname(p)); // its name too: the hash table written next says it exists
    return Replica.open(p, sizeBytes);
  }

  /**
   * Null while the path still names the file or device this replica has open; else how it differs (it was
   * replaced, or removed: then writing on would go to a file nobody can reach).
   */
  async replaced(): Promise<string | null> {
    const [st, mine] = await Promise.all([fsp.stat(this.path, { bigint: true }).catch((e: NodeJS.ErrnoException) => e), this.fh.stat({ bigint: true })]);
    if (st instanceof Error) return st.code === 'ENOENT' ? `${this.path} no longer exists` : `${this.path}: ${st.message}`;
    const size = (s: typeof st): number => (s.isBlockDevice() ? this.identity.size : Number(s.size));
    return replacedHow(identityOf(mine, size(mine)), identityOf(st, size(st)));
  }

  /** `into`: a buffer the caller is done with, read into instead of a fresh one; use the buffer returned. */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === length ? buf : buf.subarray(0, done);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) done += (await this.fh.write(data, done, data.length - done, offset + done)).bytesWritten;
  }

  /** Each buffer at its offset, in order (a later one over an earlier one wins): one call for many extents. */
  async writeMany(offsets: number[], data: Buffer[]): Promise<void> {
    if (data.length === 0) return;
    if (data.length === 1) return this.write(offsets[0]!, data[0]!);
    await writeMany(this.fh.fd, data, offsets);
  }

  /** The ranges' bytes, one Buffer per range (slices of one read): one call for many extents. */
  async readMany(ranges: ReadonlyArray<{ offset: number; length: number }>): Promise<Buffer[]> {
    if (ranges.length === 0) return [];
    const all = await readMany(this.fh.fd, ranges.map((r) => r.offset), ranges.map((r) => r.length));
    let at = 0;
    return ranges.map((r) => all.subarray(at, (at += r.length)));
  }

  async sync(): Promise<void> {
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
