// Linux system calls Node does not offer: reflink clone, filesystem freeze/thaw, block device size,
// reads that bypass the page cache (O_DIRECT needs aligned memory, which Node cannot allocate).
// The C side (native/src/) is built by `npm run build:native`; this file checks arguments and turns
// the addon's errno errors into Tidemark errors that say what to do.
import { constants as bufferConstants } from 'node:buffer';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmError, type ErrorCode, type TidemarkError } from '../common/errors.js';

interface Addon {
  ficlone(src: string, dst: string): Promise<void>;
  freeze(mountpoint: string): Promise<void>;
  thaw(mountpoint: string): Promise<void>;
  blockDeviceSize(device: string): number;
  readDirect(fd: number, offset: number, length: number): Promise<Buffer>;
  peerCredentials(fd: number): PeerCredentials;
  flock(fd: number, exclusive: boolean): void;
  writeMany(fd: number, buffers: Buffer[], offsets: number[]): Promise<void>;
  readMany(fd: number, offsets: number[], lengths: number[]): Promise<Buffer>;
  keepFreedMemory(trimBytes: number): KeepFreedResult;
}

/** Who is at the other end of a Unix socket, as the kernel recorded it at connect (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** The folder holding native/binding.gyp: this file runs as native/index.ts or dist/native/index.js. */
function projectRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'native', 'binding.gyp'))) return dir;
    if (path.dirname(dir) === dir) throw tmError('TM_ERR_NATIVE', `native addon: no native/binding.gyp above ${here}`, { path: here });
  }
}

let addon: Addon | undefined;

/** Loaded on first use, so importing this module costs nothing where no native call is made. */
function load(): Addon {
  if (process.platform !== 'linux') {
    throw tmError('TM_ERR_UNSUPPORTED', `reflink clone, filesystem freeze, block device size and direct reads need Linux; this is ${process.platform}: use capture "none"`, { platform: process.platform });
  }
  if (addon === undefined) {
    const file = path.join(projectRoot(), 'native', 'build', 'Release', 'tidemark_native.node');
    try {
      addon = createRequire(import.meta.url)(file) as Addon;
    } catch (e) {
      throw tmError('TM_ERR_NATIVE', `load native addon ${file}: ${(e as Error).message}; build it with "npm run build:native"`, { path: file }, e);
    }
  }
  return addon;
}

/** Absolute form of a path argument; the C side reads strings only and a NUL would cut the path short. */
function pathArg(name: string, p: unknown): string {
  if (typeof p !== 'string' || p === '' || p.includes('\0')) {
    throw tmError('TM_ERR_NATIVE', `${name} must be a non-empty path without NUL bytes, got ${JSON.stringify(p)}`, { [name]: p });
  }
  return path.resolve(p);
}

/** What the addon attaches to its errors: the errno and the step that failed ("open", "FICLONE", ...). */
interface NativeFailure {
  errno: string;
  syscall: string;
  message: string;
}

// errno number -> name. os.constants.errno lacks ENOTBLK and calls 95 ENOTSUP; the kernel says EOPNOTSUPP.
const ERRNO_NAMES = new Map<number, string>([
  ...Object.entries(os.constants.errno).map(([name, n]) => [n, name] as const).reverse(),
  [15, 'ENOTBLK'],
  [95, 'EOPNOTSUPP'],
]);

function failure(e: unknown): NativeFailure {
  const { errno, syscall, message } = e as { errno?: unknown; syscall?: unknown; message?: unknown };
  const name = (typeof errno === 'number' && ERRNO_NAMES.get(errno)) || `errno ${String(errno)}`;
  return { errno: name, syscall: typeof syscall === 'string' ? syscall : 'unknown', message: String(message ?? e) };
}

/** A Tidemark error for a failed call: `<doing>: <ERRNO>: <explanation or strerror>`. */
function fail(e: unknown, doing: string, context: Record<string, unknown>, explain: (f: NativeFailure) => [ErrorCode, string] | undefined): TidemarkError {
  const f = failure(e);
  const [code, why] = explain(f) ?? ['TM_ERR_NATIVE', f.message];
  return tmError(code, `${doing}: ${f.errno}: ${why}`, { ...context, errno: f.errno, syscall: f.syscall }, e);
}

/** Create `dst` (mode 0600, must not exist) as a reflink clone of `src`; both on one XFS or btrfs filesystem. */
export async function ficlone(src: string, dst: string): Promise<void> {
  const a = load();
  const from = pathArg('src', src);
  const to = pathArg('dst', dst);
  try {
    await a.ficlone(from, to);
  } catch (e) {
    throw fail(e, `reflink ${from} to ${to}`, { path: from, clone: to }, (f) => {
      if (f.syscall !== 'FICLONE') return undefined;
      if (f.errno === 'EXDEV') {
        return ['TM_ERR_UNSUPPORTED', 'source and clone are on different filesystems; a reflink clone must be on the filesystem of the image'];
      }
      if (['EOPNOTSUPP', 'EINVAL', 'ENOTTY'].includes(f.errno)) {
        return ['TM_ERR_UNSUPPORTED', 'this filesystem does not support reflink (ext4 does not); put the image on XFS made with "mkfs.xfs -m reflink=1" or on btrfs, or use capture "freeze" or "none"'];
      }
      return undefined;
    });
  }
}

/** freeze.c refuses a directory that is not a mount's root: FIFREEZE would freeze the filesystem holding it. */
function notMountRoot(f: NativeFailure): [ErrorCode, string] | undefined {
  if (f.syscall !== 'mount root') return undefined;
  return ['TM_ERR_NATIVE', 'not the root of a mount; give the directory the filesystem is mounted on'];
}

/** Flush the filesystem mounted at `mountpoint` and block writes to it until thaw(). Needs root. */
export async function freeze(mountpoint: string): Promise<void> {
  const a = load();
  const mnt = pathArg('mountpoint', mountpoint);
  try {
    await a.freeze(mnt);
  } catch (e) {
    throw fail(e, `freeze ${mnt}`, { path: mnt }, (f) => {
      if (f.syscall !== 'FIFREEZE') return notMountRoot(f);
      if (f.errno === 'EPERM') return ['TM_ERR_NATIVE', 'freezing a filesystem needs root (CAP_SYS_ADMIN)'];
      if (f.errno === 'EBUSY') return ['TM_ERR_NATIVE', `already frozen (by another tool?); thaw it with "fsfreeze -u ${mnt}"`];
      if (f.errno === 'EOPNOTSUPP') return ['TM_ERR_UNSUPPORTED', 'this filesystem cannot be frozen; use capture "none"'];
      return undefined;
    });
  }
}

/** Let writes to the filesystem mounted at `mountpoint` go on after freeze(). Needs root. */
export async function thaw(mountpoint: string): Promise<void> {
  const a = load();
  const mnt = pathArg('mountpoint', mountpoint);
  try {
    await a.thaw(mnt);
  } catch (e) {
    throw fail(e, `thaw ${mnt}`, { path: mnt }, (f) => {
      if (f.syscall !== 'FITHAW') return notMountRoot(f);
      if (f.errno === 'EPERM') return ['TM_ERR_NATIVE', 'thawing a filesystem needs root (CAP_SYS_ADMIN)'];
      if (f.errno === 'EINVAL') return ['TM_ERR_NATIVE', 'the filesystem is not frozen'];
      return undefined;
    });
  }
}

/** Size in bytes of a block device (stat gives 0 for one). Throws for anything else. */
export function blockDeviceSize(device: string): number {
  const a = load();
  const dev = pathArg('device', device);
  try {
    return a.blockDeviceSize(dev);
  } catch (e) {
    throw fail(e, `size of ${dev}`, { path: dev }, (f) =>
      f.errno === 'ENOTBLK' ? ['TM_ERR_NATIVE', 'not a block device (for an image file, use its stat size)'] : undefined);
  }
}

/**
 * Read [offset, offset + length) of a block device opened with fs.constants.O_DIRECT: the bytes on the
 * device, never the page cache's. Needed for a device a filesystem is mounted on: its file data is written
 * around the device's cache (earlier-read pages go stale) and its metadata in the cache can be newer than
 * the disk, and cached pages the filesystem holds cannot be dropped. Any offset and length: the aligned
 * superset (to the device's logical block size) is read and the range returned. Short only at the end of
 * the device. Runs on the libuv pool.
 */
export async function readDirect(fd: number, offset: number, length: number): Promise<Buffer> {
  const a = load();
  const context = { fd, offset, length };
  for (const [name, v] of Object.entries(context)) {
    if (!Number.isSafeInteger(v) || v < 0) throw tmError('TM_ERR_NATIVE', `readDirect: ${name} must be a non-negative integer, got ${String(v)}`, context);
  }
  if (length > bufferConstants.MAX_LENGTH) throw tmError('TM_ERR_NATIVE', `readDirect: ${length} bytes is more than a Buffer holds (${bufferConstants.MAX_LENGTH})`, context);
  try {
    return await a.readDirect(fd, offset, length);
  } catch (e) {
    throw fail(e, `direct read of ${length} bytes at ${offset} from fd ${fd}`, context, (f) => {
      if (f.syscall === 'O_DIRECT') return ['TM_ERR_NATIVE', 'the file was not opened with O_DIRECT, so the read would come from the page cache; open it with fs.constants.O_DIRECT'];
      if (f.errno === 'EBADF') return ['TM_ERR_NATIVE', 'not an open file descriptor (closed already?)'];
      return undefined;
    });
  }
}

/**
 * Write each buffer at its offset of `fd`, in the order given (a later one over an earlier one wins), as one
 * job on the libuv pool: neighbouring ranges go as one pwritev. The scattered extents of a differential cost
 * one pool round trip instead of one each. Rejects if any write fails; what reached the file is then unknown.
 */
export async function writeMany(fd: number, buffers: Buffer[], offsets: number[]): Promise<void> {
  const a = load();
  if (buffers.length !== offsets.length) throw tmError('TM_ERR_NATIVE', `writeMany: ${buffers.length} buffers for ${offsets.length} offsets`, { fd });
  try {
    await a.writeMany(fd, buffers, offsets);
  } catch (e) {
    throw fail(e, `write of ${buffers.length} ranges to fd ${fd}`, { fd }, (f) => (f.errno === 'EBADF' ? ['TM_ERR_NATIVE', 'not an open file descriptor (closed already?)'] : undefined));
  }
}

/**
 * Read the ranges [offsets[i], offsets[i] + lengths[i]) of `fd` into one Buffer, back to back, as one job on
 * the libuv pool (neighbouring ranges as one preadv). A range past the end of the file fails (ENODATA).
 */
export async function readMany(fd: number, offsets: number[], lengths: number[]): Promise<Buffer> {
  const a = load();
  if (lengths.length !== offsets.length) throw tmError('TM_ERR_NATIVE', `readMany: ${lengths.length} lengths for ${offsets.length} offsets`, { fd });
  const total = lengths.reduce((n, l) => n + l, 0);
  if (total > bufferConstants.MAX_LENGTH) throw tmError('TM_ERR_NATIVE', `readMany: ${total} bytes is more than a Buffer holds (${bufferConstants.MAX_LENGTH})`, { fd });
  try {
    return await a.readMany(fd, offsets, lengths);
  } catch (e) {
    throw fail(e, `read of ${offsets.length} ranges from fd ${fd}`, { fd }, (f) => {
      if (f.errno === 'EBADF') return ['TM_ERR_NATIVE', 'not an open file descriptor (closed already?)'];
      if (f.errno === 'ENODATA') return ['TM_ERR_NATIVE', 'a range lies past the end of the file'];
      return undefined;
    });
  }
}

/** The file descriptor under a connected Unix socket (libuv's pipe handle; absent once closed). */
function socketFd(socket: { _handle?: { fd?: number } | null }): number {
  const fd = socket._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw tmError('TM_ERR_NATIVE', 'peer credentials: the socket has no file descriptor (closed, or not a Unix socket)');
  return fd;
}

/** The peer of a connected Unix-domain net.Socket: its pid, uid and gid at connect time. */
export function peerCredentials(socket: object): PeerCredentials {
  const a = load();
  const fd = socketFd(socket as { _handle?: { fd?: number } | null });
  try {
    return a.peerCredentials(fd);
  } catch (e) {
    throw fail(e, `peer credentials of fd ${fd}`, { fd }, () => undefined);
  }
}

/**
 * Take an advisory lock on the open file `fd` (exclusive, or shared), without waiting; released when
 * the file is closed or the process ends. Returns false when another open file holds a conflicting lock.
 */
export function tryLock(fd: number, exclusive: boolean): boolean {
  const a = load();
  if (!Number.isSafeInteger(fd) || fd < 0) throw tmError('TM_ERR_NATIVE', `tryLock: fd must be a non-negative integer, got ${String(fd)}`, { fd });
  try {
    a.flock(fd, exclusive);
    return true;
  } catch (e) {
    if (failure(e).errno === 'EWOULDBLOCK' || failure(e).errno === 'EAGAIN') return false;
    throw fail(e, `lock fd ${fd}`, { fd }, () => undefined);
  }
}

/** What keepFreedMemory did: both thresholds set, one refused (the other still set), or nothing (not glibc). */
export type KeepFreedResult = 'set' | 'mmap threshold refused' | 'trim threshold refused' | 'not glibc';

/**
 * Let the free top of each heap grow to `trimBytes` before it is handed back to the kernel, and take
 * allocations up to 32 MiB from the heap (native/src/malloc-tune.c says why).
 */
export function keepFreedMemory(trimBytes: number): KeepFreedResult {
  return load().keepFreedMemory(trimBytes);
}
