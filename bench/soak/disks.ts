// The soak's disks: an XFS (reflink) holding the source image, the replica and recovered points, and a
// small ext4 under each of the process server's cache and the master target's state, which the
// disk-full fault fills and frees. All in loop-mounted images under the soak's folder.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { makeFs, type Fs } from '../recovery-system.js';
import { bin } from '../system.js';

export interface SoakDisks {
  xfs: Fs;
  psCache: Fs;
  mtState: Fs;
}

export async function makeDisks(workDir: string, labDir: string): Promise<SoakDisks> {
  const missing = ['mkfs.xfs', 'mkfs.ext4', 'losetup', 'mount', 'umount', 'fallocate'].filter((t) => bin(t) === null);
  if (process.getuid?.() !== 0) missing.push('root');
  if (missing.length) throw new Error(`the soak needs ${missing.join(', ')} (Debian: xfsprogs, e2fsprogs, util-linux, mount)`);
  await fsp.mkdir(labDir, { recursive: true });
  const xfs = await makeFs(workDir, 'xfs', 'xfs', 1200);
  const psCache = await makeFs(labDir, 'ps-cache', 'ext4', 96);
  const mtState = await makeFs(labDir, 'mt-state', 'ext4', 384);
  return { xfs, psCache, mtState };
}

/** Fill a filesystem to the last byte with a file named `name` on it; returns the bytes taken. */
export async function fill(mnt: string, name: string): Promise<number> {
  const file = path.join(mnt, name);
  const st = await fsp.statfs(mnt);
  const free = st.bavail * st.bsize;
  const bulk = Math.max(0, free - (1 << 20));
  if (bulk > 0) execFileSync(bin('fallocate') ?? 'fallocate', ['-l', String(bulk), file]);
  // The last MiB by small appends until the filesystem says no.
  const fh = await fsp.open(file, 'a');
  const chunk = Buffer.alloc(16384);
  let taken = bulk;
  try {
    for (;;) {
      await fh.write(chunk);
      taken += chunk.length;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    await fh.close().catch(() => {});
  }
  return taken;
}

export async function free(mnt: string, name: string): Promise<void> {
  await fsp.rm(path.join(mnt, name), { force: true });
}
