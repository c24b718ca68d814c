// Durable file operations: a file is durable once its data and the directory entry naming it are fsync'd.
// Every acknowledgement in Tidemark stands on these.
import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { tmError } from './errors.js';

export const TMP_SUFFIX = '.tmp';

/**
 * A temp name beside `file` no other writer uses (pid + random), so two writers of one file (two
 * processes, or two async writes in one) never write into each other's temp file. Ends in TMP_SUFFIX,
 * so removeTempFiles still cleans it after a crash.
 */
export function tempName(file: string): string {
  return `${file}.${process.pid}.${randomBytes(6).toString('hex')}${TMP_SUFFIX}`;
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** tmp -> fsync -> rename -> fsync dir. Readers never see a partial file under the final name. */
export async function writeFileDurable(file: string, data: Uint8Array | string): Promise<void> {
  const tmp = tempName(file);
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  await fsyncDir(path.dirname(file));
}

/** fsync a file written by someone else (a clone made by FICLONE, say). */
export async function syncFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Rename a fully written and fsync'd temp file into place, durably. */
export async function commitRename(tmp: string, file: string): Promise<void> {
  await fsp.rename(tmp, file);
  await fsyncDir(path.dirname(file));
}

/** Unlink then fsync the directory, so a deletion is not undone by a crash. */
export async function unlinkDurable(file: string): Promise<void> {
  await fsp.rm(file, { force: true });
  await fsyncDir(path.dirname(file));
}

/** Remove what a crash left behind: temp files that were never renamed into place. */
export async function removeTempFiles(dir: string): Promise<number> {
  let removed = 0;
  for (const name of await fsp.readdir(dir)) {
    if (name.endsWith(TMP_SUFFIX)) {
      await fsp.rm(path.join(dir, name), { force: true });
      removed++;
    }
  }
  if (removed > 0) await fsyncDir(dir);
  return removed;
}

export async function ensureDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    // mkdir -p on a read-only filesystem says ENOENT for the folder it could not make: name the real cause.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let up = path.dirname(path.resolve(dir));
    while (up !== path.dirname(up) && !(await fsp.stat(up).then(() => true, () => false))) up = path.dirname(up);
    const why = await fsp.access(up, constants.W_OK).then(() => null, (a: NodeJS.ErrnoException) => a);
    if (why?.code === 'EROFS') throw tmError('TM_ERR_IO', `cannot create ${dir}: ${up} is on a read-only filesystem (EROFS)`, { path: dir }, e);
    if (why) throw tmError('TM_ERR_IO', `cannot create ${dir}: ${up} is not writable (${why.code})`, { path: dir }, e);
    throw e;
  }
}
