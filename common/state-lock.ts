// One process per state (or cache) directory: an exclusive flock on <dir>/tidemark.lock, held for the
// holder's life and released by the kernel when it exits, however it exits. The file records the
// holder's pid so a refusal can name it. Daemons hold it while they run; offline commands on the master
// target's state (recover, attach-seeded) hold it while they work, so neither runs under the other.
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { ensureDir } from './durable.js';
import { tmError } from './errors.js';
import { tryLock } from '../native/index.js';

export const LOCK_FILE = 'tidemark.lock';

export interface StateLock {
  readonly file: string;
  release(): Promise<void>;
}

/** The pid recorded by the lock's holder, or null (not written yet, or not a number). */
export async function lockHolder(dir: string): Promise<number | null> {
  const text = await fsp.readFile(path.join(dir, LOCK_FILE), 'utf8').catch(() => '');
  return /^\d+\s*$/.test(text) ? Number(text) : null;
}

/**
 * Take the lock on `dir` for `what` ("master target", "tidemark recover"), or throw TM_ERR_STATE_LOCKED
 * naming the holder. Never waits. With `create: false` a missing folder is an ENOENT error, not created.
 */
export async function lockStateDir(dir: string, what: string, opts: { create?: boolean } = {}): Promise<StateLock> {
  if (opts.create ?? true) await ensureDir(dir);
  const file = path.join(dir, LOCK_FILE);
  const fh = await fsp.open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  let locked = false;
  try {
    locked = tryLock(fh.fd, true);
  } finally {
    if (!locked) await fh.close();
  }
  if (!locked) {
    // The holder writes its pid right after locking: a moment's wait covers a holder that just started.
    let pid = await lockHolder(dir);
    for (let i = 0; pid === null && i < 20; i++) {
      await new Promise((r) => setTimeout(r, 10));
      pid = await lockHolder(dir);
    }
    throw tmError('TM_ERR_STATE_LOCKED', `${dir} is in use by another process (pid ${pid ?? 'unknown'}), which holds ${file}; ${what} needs it alone: stop that process first, or give this one its own folder`, { path: dir, pid });
  }
  await fh.truncate(0);
  await fh.write(`${process.pid}\n`, 0);
  await fh.sync();
  let released: Promise<void> | null = null;
  return {
    file,
    release: () => (released ??= fh.close()),
  };
}
