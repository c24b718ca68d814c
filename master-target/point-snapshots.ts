// Local snapshots of the replica at its last N recovery points: a reflink clone (FICLONE, XFS or btrfs)
// taken right after the point's differential is applied and before the next one touches the replica.
// Instant and sharing unchanged blocks, they give a test failover or a quick look at a recent point
// without rolling anything back. Named <volume>-<seq>.img; the oldest beyond `keep` are removed.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import { wrap } from '../common/errors.js';
import { ficlone } from '../native/index.js';
import { commitRename, fsyncDir, syncFile, tempName, TMP_SUFFIX } from '../common/durable.js';
import type { RecoveryPoint } from './volume-state.js';

export interface SnapshotOptions {
  dir: string;
  keep: number;
}

export class PointSnapshots {
  constructor(private readonly volumeId: string, private readonly replicaPath: string, private readonly opts: SnapshotOptions, private readonly log: Logger) {}

  /** Fail at start, with the reason, where the replica's filesystem cannot clone. */
  async open(): Promise<void> {
    await fsp.mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
    // Clones of this volume a crash interrupted (the folder may be shared with other volumes).
    for (const n of await fsp.readdir(this.opts.dir)) if (n.startsWith(`${this.volumeId}-`) && n.endsWith(TMP_SUFFIX)) await fsp.rm(path.join(this.opts.dir, n), { force: true });
    const probe = path.join(this.opts.dir, `${this.volumeId}.probe.tmp`);
    await fsp.rm(probe, { force: true });
    await ficlone(this.replicaPath, probe).catch((e) => { throw wrap(e, `snapshots of ${this.volumeId} in ${this.opts.dir}`, { volume: this.volumeId }); });
    await fsp.rm(probe, { force: true });
  }

  pathOf(seq: number): string {
    return path.join(this.opts.dir, `${this.volumeId}-${String(seq).padStart(10, '0')}.img`);
  }

  async take(point: RecoveryPoint): Promise<void> {
    try {
      // Cloned under a temp name, fsync'd, renamed, directory fsync'd: a crash leaves a whole snapshot or none.
      const tmp = tempName(this.pathOf(point.seq));
      await ficlone(this.replicaPath, tmp);
      await syncFile(tmp);
      await commitRename(tmp, this.pathOf(point.seq)); // replaces one taken before a crash re-applied the point
      const mine = (await fsp.readdir(this.opts.dir)).filter((n) => n.startsWith(`${this.volumeId}-`) && n.endsWith('.img')).sort();
      const old = mine.slice(0, Math.max(0, mine.length - this.opts.keep));
      for (const n of old) await fsp.rm(path.join(this.opts.dir, n), { force: true });
      if (old.length > 0) await fsyncDir(this.opts.dir);
    } catch (e) {
      const err = wrap(e, `snapshot of point ${point.seq}`, { volume: this.volumeId, seq: point.seq });
      this.log.error({ volume: this.volumeId, seq: point.seq, code: err.code, err: err.message }, 'point snapshot failed; replication goes on');
    }
  }
}
