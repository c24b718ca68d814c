// The system side of the recovery benchmark: filesystems in loop-mounted images (XFS with reflink, ext4
// without), cold caches before each timed step, the `cp` references, and a teardown that only touches what
// lies under the benchmark's own folder. Needs root.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { MiB, timed } from './harness.js';
import { bin, sh, unmountAndDetach, version } from './system.js';

export { bin, sh, version };

export function requirements(): void {
  const missing = ['mkfs.xfs', 'mkfs.ext4', 'losetup', 'mount', 'umount', 'cp', 'sync', 'filefrag'].filter((t) => bin(t) === null);
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('root (loop devices and mounts)');
  if (!existsSync('/dev/loop-control')) problems.push('/dev/loop-control');
  if (missing.length > 0) problems.push(`${missing.join(', ')} on PATH (Debian packages: xfsprogs, e2fsprogs, mount, coreutils)`);
  if (problems.length > 0) throw new Error(`recovery needs ${problems.join('; ')}`);
}

/** Unmount everything under `dir` and detach the loop devices over images in it (never other ones). */
export function teardownSystem(dir: string): void {
  unmountAndDetach(dir);
}

export interface Fs {
  type: 'xfs' | 'ext4';
  image: string;
  dev: string;
  mnt: string;
}

/**
 * A filesystem in a sparse image under `dir`, on a loop device with direct I/O: the image's pages are not
 * cached a second time below the filesystem, so fsync reaches the disk and a file whose pages are dropped
 * is read from the disk again, as on a real master target.
 */
export async function makeFs(dir: string, name: string, type: Fs['type'], sizeMiB: number): Promise<Fs> {
  const image = path.join(dir, `${name}.img`);
  const mnt = path.join(dir, name);
  await fsp.mkdir(mnt, { recursive: true });
  await fsp.writeFile(image, '');
  await fsp.truncate(image, sizeMiB * MiB);
  if (type === 'xfs') sh('mkfs.xfs', '-q', '-m', 'reflink=1', image);
  else sh('mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image);
  const dev = sh('losetup', '-f', '--show', '--direct-io=on', image);
  sh('mount', dev, mnt);
  return { type, image, dev, mnt };
}

/**
 * Write back the filesystem's dirty pages, then drop the cached pages of `files` (posix_fadvise
 * DONTNEED), so the next step reads them from the disk: a recovery reads segments written long ago.
 * One python3 process for all files when there is one; else GNU dd per file.
 */
export function coldCache(mnt: string, files: readonly string[]): void {
  sh('sync', '-f', mnt);
  if (files.length === 0) return;
  const py = bin('python3');
  if (py) {
    const script = 'import os,sys\nfor f in sys.stdin.read().split("\\0"):\n  if f:\n    fd=os.open(f,os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)';
    const r = spawnSync(py, ['-c', script], { input: files.join('\0'), stdio: ['pipe', 'ignore', 'pipe'] });
    if (r.status === 0) return;
  }
  for (const f of files) execFileSync(bin('dd') ?? 'dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Pages of `file` in the page cache (fincore), or NaN where fincore is missing: checks coldCache worked. */
export function cachedBytes(file: string): number {
  try {
    return Number(sh('fincore', '--bytes', '--noheadings', '--output', 'RES', file));
  } catch {
    return NaN;
  }
}

/** Extents of `file` that filefrag marks shared (reflinked): proves which copies really copied. */
export function sharedExtents(file: string): number {
  return sh('filefrag', '-v', file).split('\n').filter((l) => /\bshared\b/.test(l)).length;
}

export interface CpRun {
  copySeconds: number;
  syncSeconds: number;
  /** CPU (user + system) of cp and sync: wall time on a shared machine waits for the CPU too. */
  cpuSeconds: number;
  sharedExtents: number;
}

let ticks = 0;
/** CPU seconds of this process's reaped children (cutime + cstime in /proc/self/stat). */
function childCpuSeconds(): number {
  ticks ||= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const text = readFileSync('/proc/self/stat', 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / ticks;
}

/** `cp --reflink=<mode>` of a cold file, then `sync` of the copy (the recovery fsyncs its output too). */
export async function cpReference(mnt: string, from: string, to: string, mode: 'never' | 'always', coldFiles: readonly string[]): Promise<CpRun> {
  await fsp.rm(to, { force: true });
  coldCache(mnt, coldFiles);
  const cpu0 = childCpuSeconds();
  const c = await timed(async () => sh('cp', `--reflink=${mode}`, from, to));
  const s = await timed(async () => sh('sync', to));
  const cpuSeconds = childCpuSeconds() - cpu0;
  const shared = sharedExtents(to);
  await fsp.rm(to, { force: true });
  return { copySeconds: c.seconds, syncSeconds: s.seconds, cpuSeconds, sharedExtents: shared };
}

/** crc32c of a whole file: the recovered image against the replica as it was at the point. */
export async function fileCrc(file: string): Promise<number> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 * MiB);
    let sum = 0;
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return sum;
      sum = crc(buf.subarray(0, bytesRead), sum);
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/**
 * recover.ts copyVolume's loop (4 MiB reads, positional writes, fsync) over the first `bytes` of `from`,
 * with a new zero-filled Buffer per chunk as copyVolume allocates it, or with one buffer reused: what the
 * allocation costs the copy path. Cold source, fresh target each time.
 */
export async function copyLoop(mnt: string, from: string, to: string, bytes: number, fresh: boolean): Promise<number> {
  await fsp.rm(to, { force: true });
  coldCache(mnt, [from]);
  const chunk = 4 * MiB;
  const src = await fsp.open(from, 'r');
  const dst = await fsp.open(to, 'wx', 0o600);
  try {
    const t = await timed(async () => {
      const shared = Buffer.allocUnsafe(chunk);
      for (let pos = 0; pos < bytes; pos += chunk) {
        const buf = fresh ? Buffer.alloc(chunk) : shared;
        const { bytesRead } = await src.read(buf, 0, chunk, pos);
        await dst.write(buf, 0, bytesRead, pos);
      }
      await dst.sync();
    });
    return t.seconds;
  } finally {
    await src.close();
    await dst.close();
    await fsp.rm(to, { force: true });
  }
}
