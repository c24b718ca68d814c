// Helpers for test/privileged: a gate that skips without root (but fails under
// TIDEMARK_REQUIRE_PRIVILEGED=1, so CI cannot pass by skipping), and throwaway loop devices and
// filesystems that are torn down after the test.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The parts of a tap test these helpers use. */
export interface TestLike {
  teardown(fn: () => unknown): void;
  fail(message: string): boolean;
  plan(n: number, comment?: string): void;
  comment(...args: unknown[]): void;
}

const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Full path of a tool on PATH or in an sbin folder (a non-root PATH often lacks those), or null. */
export function tool(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), ...SBIN]) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * True when the test may run: root, /dev/loop-control and every tool present. Otherwise the test is
 * skipped with the reason, or fails when TIDEMARK_REQUIRE_PRIVILEGED=1. Call first; return if false.
 */
export function privileged(t: TestLike, tools: string[] = []): boolean {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  if (!fs.existsSync('/dev/loop-control')) missing.push('/dev/loop-control');
  for (const name of ['losetup', 'mount', 'umount', ...tools]) if (tool(name) === null) missing.push(name);
  if (missing.length === 0) return true;
  const reason = `needs ${missing.join(', ')}`;
  if (process.env.TIDEMARK_REQUIRE_PRIVILEGED === '1') t.fail(`${reason} (TIDEMARK_REQUIRE_PRIVILEGED=1 forbids skipping)`);
  else t.plan(0, reason);
  return false;
}

/**
 * Pids of processes whose full command line matches `pattern` (pgrep -f). No match is an empty list;
 * any other failure (pgrep missing, a bad pattern) throws rather than reading as "none left".
 */
export function pgrep(pattern: string): number[] {
  const bin = tool('pgrep');
  if (bin === null) throw new Error('pgrep is not installed (procps)');
  try {
    return execFileSync(bin, ['-f', pattern], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n').filter(Boolean).map(Number);
  } catch (e) {
    if ((e as { status?: number }).status === 1) return [];
    throw e;
  }
}

/** Run a tool, return its trimmed stdout; throws with its stderr on a non-zero exit. */
export function run(name: string, ...args: string[]): string {
  return execFileSync(tool(name) ?? name, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** Run cleanup steps that must never throw: a teardown that throws skips the ones after it. */
function quietly(t: TestLike, what: string, fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    t.comment(`teardown: ${what}: ${(e as Error).message}`);
    return false;
  }
}

/** A temp folder removed after the test. */
export function tempDir(t: TestLike): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-priv-'));
  t.teardown(() => quietly(t, `rm ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true })));
  return dir;
}

/** A sparse image file of sizeMiB in a temp folder. */
export function makeImage(t: TestLike, sizeMiB: number): string {
  const image = path.join(tempDir(t), 'disk.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, sizeMiB * 2 ** 20);
  return image;
}

/** Attach `file` to a free loop device (/dev/loopN), detached after the test. */
export function attachLoop(t: TestLike, file: string): string {
  const dev = run('losetup', '-f', '--show', file);
  t.teardown(() => quietly(t, `losetup -d ${dev}`, () => run('losetup', '-d', dev)));
  return dev;
}

export interface Mounted {
  image: string;
  dev: string;
  mnt: string;
}

/** Make a filesystem on a loop device over a new image and mount it; all undone after the test. */
function makeFs(t: TestLike, sizeMiB: number, mkfs: string[]): Mounted {
  const image = makeImage(t, sizeMiB);
  const dev = attachLoop(t, image);
  run(mkfs[0]!, ...mkfs.slice(1), dev);
  const mnt = fs.mkdtempSync(path.join(path.dirname(image), 'mnt-'));
  run('mount', dev, mnt);
  // Teardowns run last-registered first: this one, then losetup -d, then rm.
  t.teardown(() => {
    // A frozen filesystem cannot be unmounted, and writers blocked on it would hang the run.
    try {
      run('fsfreeze', '-u', mnt);
    } catch {
      // not frozen: the usual case
    }
    if (!quietly(t, `umount ${mnt}`, () => run('umount', mnt))) quietly(t, `umount -l ${mnt}`, () => run('umount', '-l', mnt));
  });
  return { image, dev, mnt };
}

/** XFS with reflink on a loop device, mounted in a temp folder. XFS needs at least 300 MiB (sparse). */
export function makeXfs(t: TestLike, sizeMiB = 300): Mounted {
  return makeFs(t, sizeMiB, ['mkfs.xfs', '-q', '-m', 'reflink=1']);
}

/** ext4 on a loop device, mounted in a temp folder. */
export function makeExt4(t: TestLike, sizeMiB = 64): Mounted {
  return makeFs(t, sizeMiB, ['mkfs.ext4', '-q', '-F']);
}
