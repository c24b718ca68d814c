// The native addon on real filesystems and loop devices: a reflink clone is a true copy that does not
// follow later writes, ext4 is refused with advice, a frozen filesystem holds writes until thaw, block
// device sizes come from the kernel, and direct reads return what is on the device.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TidemarkError } from '../../common/errors.js';
import { blockDeviceSize, ficlone, freeze, readDirect, thaw } from '../../native/index.js';
import { execFileSync } from 'node:child_process';
import { Volume } from '../../agent/volume.js';
import { attachLoop, makeExt4, makeImage, makeXfs, privileged } from './require-root.js';
import { Rng } from '../seed.js';

const rng = new Rng('native');

const MiB = 2 ** 20;
/** Compare contents by digest: tap's deep compare of megabyte buffers is very slow. */
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const shaOf = (file: string): string => sha(fs.readFileSync(file));

t.test('ficlone on XFS: an identical file that later writes to the source do not change', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const { mnt } = makeXfs(t);
  const src = path.join(mnt, 'disk.img');
  const dst = path.join(mnt, 'disk.clone');
  const before = rng.bytes(4 * MiB);
  fs.writeFileSync(src, before);

  await ficlone(src, dst);
  t.equal(shaOf(dst), sha(before), 'clone has the bytes of the source');
  t.equal(fs.statSync(dst).mode & 0o777, 0o600, 'clone is private to its owner');

  const fd = fs.openSync(src, 'r+');
  fs.writeSync(fd, rng.bytes(MiB), 0, MiB, MiB);
  fs.closeSync(fd);
  t.not(shaOf(src), sha(before), 'source changed');
  t.equal(shaOf(dst), sha(before), 'clone still has the bytes of the moment it was made');

  const err = await ficlone(src, dst).catch((e: unknown) => e);
  t.match(err, { code: 'TM_ERR_NATIVE', context: { errno: 'EEXIST' } }, 'an existing clone path is refused');
  t.equal(shaOf(dst), sha(before), '... and left as it was');
});

t.test('ficlone on ext4: TM_ERR_UNSUPPORTED pointing to XFS, and no clone left behind', async (t) => {
  if (!privileged(t, ['mkfs.ext4'])) return;
  const { mnt } = makeExt4(t);
  const src = path.join(mnt, 'disk.img');
  const dst = path.join(mnt, 'disk.clone');
  fs.writeFileSync(src, rng.bytes(MiB));

  const err = await ficlone(src, dst).catch((e: unknown) => e);
  t.type(err, TidemarkError);
  t.match(err, { code: 'TM_ERR_UNSUPPORTED', context: { errno: 'EOPNOTSUPP', path: src, clone: dst } });
  t.match((err as Error).message, /does not support reflink.*XFS.*reflink=1/, 'message says where reflink works');
  t.notOk(fs.existsSync(dst), 'the half-made clone was removed');
});

t.test('freeze holds a write until thaw', async (t) => {
  if (!privileged(t, ['mkfs.ext4', 'fsfreeze'])) return;
  const { mnt } = makeExt4(t);
  const file = path.join(mnt, 'written-while-frozen');

  const sub = path.join(mnt, 'sub');
  fs.mkdirSync(sub);
  const notRoot = await freeze(sub).catch((e: unknown) => e);
  t.match(notRoot, { code: 'TM_ERR_NATIVE', message: /not the root of a mount/ }, 'a directory inside the mount is refused, not the filesystem frozen');

  await freeze(mnt);
  const writer = spawn('sh', ['-c', 'echo x > "$1"', 'sh', file], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => writer.on('exit', (code) => resolve(code)));
  // Positive signal that it waits on the frozen filesystem: the writer sleeps uninterruptibly (state D).
  const state = (): string => { try { return /^\d+ \(.*\) (\S)/.exec(fs.readFileSync(`/proc/${writer.pid}/stat`, 'utf8'))?.[1] ?? ''; } catch { return ''; } };
  for (const end = Date.now() + 10_000; state() !== 'D' && writer.exitCode === null && Date.now() < end;) await new Promise((r) => setTimeout(r, 10));
  t.equal(state(), 'D', `the writer is blocked in the kernel (waiting in ${fs.readFileSync(`/proc/${writer.pid}/wchan`, 'utf8') || '?'})`);
  t.equal(writer.exitCode, null, 'and has not finished');

  const again = await freeze(mnt).catch((e: unknown) => e);
  t.match(again, { code: 'TM_ERR_NATIVE', context: { errno: 'EBUSY' }, message: /already frozen/ }, 'freezing twice says it is already frozen');

  await thaw(mnt);
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 10_000).unref())]);
  t.equal(code, 0, 'the write finishes after thaw');
  t.equal(fs.readFileSync(file, 'utf8'), 'x\n', 'and its data is there');
});

t.test('thaw of a filesystem that is not frozen says so', async (t) => {
  if (!privileged(t, ['mkfs.ext4'])) return;
  const { mnt } = makeExt4(t);
  const err = await thaw(mnt).catch((e: unknown) => e);
  t.match(err, { code: 'TM_ERR_NATIVE', context: { errno: 'EINVAL', path: mnt }, message: /not frozen/ });
});

t.test('blockDeviceSize: a loop device has the size of its image; a regular file is refused', async (t) => {
  if (!privileged(t)) return;
  const image = makeImage(t, 48);
  const dev = attachLoop(t, image);
  t.equal(blockDeviceSize(dev), 48 * MiB);

  t.throws(() => blockDeviceSize(image), { code: 'TM_ERR_NATIVE', context: { errno: 'ENOTBLK' }, message: /not a block device/ });
  t.throws(() => blockDeviceSize(path.join(path.dirname(image), 'missing')), { code: 'TM_ERR_NATIVE', context: { errno: 'ENOENT' } });
});

t.test('readDirect: the bytes on the device, not stale page cache, for any offset and length; Volume reads a device that way', async (t) => {
  if (!privileged(t, ['mkfs.ext4', 'dd'])) return;
  const { dev, mnt } = makeExt4(t, 64);
  const size = blockDeviceSize(dev);
  const buffered = fs.openSync(dev, 'r');
  t.teardown(() => fs.closeSync(buffered));
  const direct = fs.openSync(dev, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  t.teardown(() => fs.closeSync(direct));
  const readBuffered = (): Buffer => {
    const b = Buffer.alloc(size);
    for (let o = 0; o < size;) o += fs.readSync(buffered, b, o, size - o, o);
    return b;
  };
  /** The reference: what dd reads from the device bypassing the cache. */
  const dd = (): Buffer => execFileSync('dd', [`if=${dev}`, 'iflag=direct', 'bs=1M', 'status=none'], { maxBuffer: 2 * size });
  const stalePages = (a: Buffer, b: Buffer): number => {
    let n = 0;
    for (let o = 0; o < size; o += 4096) if (a.compare(b, o, o + 4096, o, o + 4096) !== 0) n++;
    return n;
  };

  readBuffered(); // the device's pages are now in its page cache
  const vol = await Volume.open(dev);
  t.teardown(() => vol.close());
  const files = [rng.bytes(300_000), rng.bytes(1_000_000), rng.bytes(5000)];
  files.forEach((data, i) => fs.writeFileSync(path.join(mnt, `file${i}`), data));
  execFileSync('sync');
  const onDisk = dd();
  for (const [i, data] of files.entries()) t.ok(onDisk.includes(data.subarray(0, 1024)), `file${i} is on the device (dd iflag=direct)`);
  t.comment(`a buffered read of the device differs from it in ${stalePages(readBuffered(), onDisk)} of ${size / 4096} pages`);

  t.equal(sha(await readDirect(direct, 0, size)), sha(onDisk), 'readDirect of the whole device equals dd iflag=direct');
  t.equal(sha(await vol.read(0, size)), sha(onDisk), "the agent's Volume reads a block device as it is on the disk");

  // Offsets and lengths off the 512-byte and 4 KiB grid, a span across many blocks, and the device's end.
  const cases: Array<[number, number]> = [[0, 1], [1, 4095], [511, 513], [4095, 2], [12_345, 3 * MiB + 7], [size - 100, 100], [size - 100, 1000], [size, 10], [size + 4096, 10]];
  for (let i = 0; i < 8; i++) cases.push([Math.floor(rng.float() * size), 1 + Math.floor(rng.float() * 2 * MiB)]);
  for (const [offset, length] of cases) {
    const want = onDisk.subarray(Math.min(offset, size), Math.min(offset + length, size));
    const got = await readDirect(direct, offset, length);
    t.equal(got.length, want.length, `readDirect(${offset}, ${length}) returns ${want.length} bytes`);
    t.ok(got.equals(want), '... equal to those of dd');
    t.ok((await vol.read(offset, length)).equals(want), '... and so does Volume.read');
  }

  await t.rejects(readDirect(2 ** 31 - 1, 0, 4096), { code: 'TM_ERR_NATIVE', context: { errno: 'EBADF' } }, 'a bad fd is an error');
  await t.rejects(readDirect(buffered, 0, 4096), { code: 'TM_ERR_NATIVE', message: /not opened with O_DIRECT/ }, 'an fd without O_DIRECT is refused: it would read the cache');
  await t.rejects(readDirect(direct, -1, 4096), { code: 'TM_ERR_NATIVE', message: /offset must be a non-negative integer/ }, 'a negative offset is refused');
});
