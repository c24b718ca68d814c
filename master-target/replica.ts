// A replica volume on the master target: an image file or a block device, written by offset.
import { promises as fsp } from 'node:fs';
import { tmError, wrap } from '../common/errors.js';
import { volumeSize } from '../common/device.js';

const ZERO_CHUNK = 4 * 1024 * 1024;

export class Replica {
  private constructor(readonly path: string, private readonly fh: fsp.FileHandle, readonly isDevice: boolean) {}

  /** Open an existing replica, checking it can hold `sizeBytes`. */
  static async open(p: string, sizeBytes: number): Promise<Replica> {
    try {
      const st = await fsp.stat(p);
      const size = await volumeSize(p);
      if (size < sizeBytes) throw tmError('TM_ERR_VOLUME_GEOMETRY', `replica ${p} holds ${size} bytes; the source has ${sizeBytes}`, { path: p });
      return new Replica(p, await fsp.open(p, 'r+'), st.isBlockDevice());
    } catch (e) {
      throw wrap(e, `open replica ${p}`, { path: p });
    }
  }

  /**
   * Make a replica that reads as zeros over `sizeBytes` (the state a new replication assumes, so the
   * source need not send its zero blocks): a sparse file, or a block device overwritten with zeros.
   */
  static async create(p: string, sizeBytes: number): Promise<Replica> {
    const st = await fsp.stat(p).catch(() => null);
    if (st?.isBlockDevice()) {
      const r = await Replica.open(p, sizeBytes);
      const zeros = Buffer.alloc(ZERO_CHUNK);
      for (let off = 0; off < sizeBytes; off += ZERO_CHUNK) await r.write(off, zeros.subarray(0, Math.min(ZERO_CHUNK, sizeBytes - off)));
      await r.sync();
      return r;
    }
    const fh = await fsp.open(p, 'w', 0o600);
    try {
      await fh.truncate(sizeBytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return Replica.open(p, sizeBytes);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) done += (await this.fh.write(data, done, data.length - done, offset + done)).bytesWritten;
  }

  async sync(): Promise<void> {
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
