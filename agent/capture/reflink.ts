// `reflink`: clone the disk image behind the volume (FICLONE, XFS or btrfs) and read the point from the
// clone. The clone is an instant point-in-time copy, so the differential is crash-consistent: it holds
// every write that completed before the clone and none after. A loop device is followed to its backing
// file (and a partition of one to its offset in it).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { blockDeviceInfo } from '../../common/device.js';
import { commitRename, syncFile } from '../../common/durable.js';
import { tmError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { ficlone } from '../../native/index.js';
import { Volume } from '../volume.js';
import type { Capture, CapturedView } from './capture.js';

export interface ReflinkOptions {
  /** Where clones go: on the image's filesystem. Default: `.tidemark-clones` beside the image. */
  dir?: string;
  /** Keep the clones of the last `keep` recovery points (local snapshots, named <volume>-<seq>.img). */
  keep: number;
}

const TMP = '.clone.tmp';

export class ReflinkCapture implements Capture {
  readonly kind = 'reflink';
  private image = '';
  private base = 0;
  private dir = '';

  constructor(private readonly volumeId: string, private readonly volume: Volume, private readonly opts: ReflinkOptions, private readonly log: Logger) {}

  async open(): Promise<void> {
    const dev = await blockDeviceInfo(this.volume.path);
    if (dev === null) {
      this.image = this.volume.path;
    } else {
      const loop = `/sys/block/${dev.diskName}/loop`;
      const backing = await fsp.readFile(path.join(loop, 'backing_file'), 'utf8').catch(() => null);
      if (backing === null) throw tmError('TM_ERR_UNSUPPORTED', `capture "reflink" clones the image file behind a loop device or VM disk; ${this.volume.path} is not backed by a file: use capture "freeze" or "none"`, { path: this.volume.path });
      this.image = backing.trim();
      this.base = Number((await fsp.readFile(path.join(loop, 'offset'), 'utf8')).trim()) + dev.startSector * 512;
    }
    this.dir = this.opts.dir ?? path.join(path.dirname(this.image), '.tidemark-clones');
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const n of await fsp.readdir(this.dir)) if (n.endsWith(TMP)) await fsp.rm(path.join(this.dir, n), { force: true });
    // Fail at start, with the reason, on a filesystem that cannot clone (ext4, or another filesystem).
    const probe = path.join(this.dir, `${this.volumeId}.probe${TMP}`);
    await ficlone(this.image, probe);
    await fsp.rm(probe, { force: true });
    this.log.info({ image: this.image, clones: this.dir, keep: this.opts.keep }, 'reflink capture ready');
  }

  async begin(): Promise<CapturedView> {
    const clone = path.join(this.dir, `${this.volumeId}.${Date.now()}${TMP}`);
    await ficlone(this.image, clone);
    const atMs = Date.now();
    const view = await Volume.openAt(clone, this.base, this.volume.sizeBytes);
    return {
      view,
      consistency: 'CRASH',
      tags: [],
      atMs,
      lasting: true,
      release: async (seq?: number) => {
        await view.close();
        if (seq === undefined || this.opts.keep === 0) return fsp.rm(clone, { force: true });
        await syncFile(clone); // kept as the point's snapshot: durable, name and all
        await commitRename(clone, this.keptPath(seq));
        await this.prune();
      },
    };
  }

  /** The kept snapshot of recovery point `seq`, if it is still kept. */
  keptPath(seq: number): string {
    return path.join(this.dir, `${this.volumeId}-${String(seq).padStart(10, '0')}.img`);
  }

  private async prune(): Promise<void> {
    const mine = (await fsp.readdir(this.dir)).filter((n) => n.startsWith(`${this.volumeId}-`) && n.endsWith('.img')).sort();
    for (const n of mine.slice(0, Math.max(0, mine.length - this.opts.keep))) await fsp.rm(path.join(this.dir, n), { force: true });
  }
}
