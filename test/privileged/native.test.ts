// The native addon on real filesystems and loop devices: a reflink clone is a true copy that does not
// follow later writes, ext4 is refused with advice, a frozen filesystem holds writes until thaw, and
// block device sizes come from the kernel.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TidemarkError } from '../../common/errors.js';
import { blockDeviceSize, dropCache, ficlone, freeze, thaw } from '../../native/index.js';
import { execFileSync } from 'node:child_process';
import { Volume } from '../../agent/volume.js';
import { attachLoop, makeExt4, makeImage, makeXfs, privileged } from './require-root.js';

const MiB = 2 ** 20;
/** Compare contents by digest: tap's deep compare of megabyte buffers is very slow. */
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const shaOf = (file: string): string => sha(fs.readFileSync(file));

t.test('ficlone on XFS: an identical file that later writes to the source do not change', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const { mnt } = makeXfs(t);
  const src = path.join(mnt, 'disk.img');
  const dst = path.join(mnt, 'disk.clone');
  const before = randomBytes(4 * MiB);
  fs.writeFileSync(src, before);

  await ficlone(src, dst);
  t.equal(shaOf(dst), sha(before), 'clone has the bytes of the source');
  t.equal(fs.statSync(dst).mode & 0o777, 0o600, 'clone is private to its owner');

  const fd = fs.openSync(src, 'r+');
  fs.writeSync(fd, randomBytes(MiB), 0, MiB, MiB);
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
  fs.writeFileSync(src, randomBytes(MiB));

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
  await new Promise((r) => setTimeout(r, 500));
  t.equal(writer.exitCode, null, 'the write is still blocked 500 ms later');

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

t.test('dropCache: a device read after it sees file data the mounted filesystem wrote since an earlier read', async (t) => {
  if (!privileged(t, ['mkfs.ext4'])) return;
  const { dev, mnt } = makeExt4(t, 64);
  const size = blockDeviceSize(dev);
  const fd = fs.openSync(dev, 'r');
  t.teardown(() => fs.closeSync(fd));
  const readAll = (): Buffer => {
    const b = Buffer.alloc(size);
    for (let o = 0; o < size;) o += fs.readSync(fd, b, o, size - o, o);
    return b;
  };
  // Every 1 KiB piece of `data` (ext4's block size here) is somewhere on the device.
  const holds = (device: Buffer, data: Buffer): boolean => {
    for (let o = 0; o < data.length; o += 1024) if (device.indexOf(data.subarray(o, Math.min(o + 1024, data.length))) < 0) return false;
    return true;
  };
  const write = (name: string): Buffer => {
    const data = randomBytes(300_000);
    fs.writeFileSync(path.join(mnt, name), data);
    execFileSync('sync');
    return data;
  };
  readAll(); // the device's pages are now cached
  const payload = write('payload');
  t.comment(`a buffered read without dropCache ${holds(readAll(), payload) ? 'happened to see the new file' : 'misses the new file: ext4 wrote its data around the device cache'}`);
  dropCache(fd, 0, size);
  t.ok(holds(readAll(), payload), 'after dropCache a buffered read of the device holds the new file');
  const vol = await Volume.open(dev);
  t.teardown(() => vol.close());
  await vol.read(0, size); // cached again...
  const payload2 = write('payload2'); // ...and stale after this
  t.ok(holds(await vol.read(0, size), payload2), "the agent's Volume reads a block device current, never from stale cache");
  t.throws(() => dropCache(2 ** 31 - 1, 0, 0), { code: 'TM_ERR_NATIVE' }, 'a bad fd is an error');
});
