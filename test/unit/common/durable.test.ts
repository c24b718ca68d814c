// Durable writes when a step fails: the file under its final name is the old one or the new one, never
// a mix; what a failed or crashed write leaves is a temp file that open() cleans. Real files; the one
// failure a filesystem cannot be made to produce on demand (fsync's EIO) is injected with t.mockImport.
import fs, { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { commitRename, removeTempFiles, TMP_SUFFIX, unlinkDurable, writeFileDurable } from '../../../common/durable.js';

async function dir(t: Test): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-durable-'));
  t.teardown(() => fsp.rm(d, { recursive: true, force: true }));
  return d;
}

const errno = (p: Promise<unknown>): Promise<string> => p.then(() => '', (e: NodeJS.ErrnoException) => e.code ?? String(e));

t.test('a failed rename leaves the final name as it was, and only a temp file behind', async (t) => {
  const d = await dir(t);
  const file = path.join(d, 'state.json');
  // A non-empty directory under the final name: rename(2) refuses to replace it.
  await fsp.mkdir(file);
  await fsp.writeFile(path.join(file, 'keep'), 'x');
  t.match(await errno(writeFileDurable(file, 'new')), /^(EISDIR|ENOTEMPTY|EEXIST)$/, 'the write fails with the rename error');
  t.ok((await fsp.stat(file)).isDirectory(), 'the final name is untouched');
  // Temp names are unique per write (<name>.<pid>.<random>.tmp), so two writers never share one.
  const temps = (await fsp.readdir(d)).filter((n) => n.startsWith('state.json.') && n.endsWith(TMP_SUFFIX));
  t.equal(temps.length, 1, 'one temp file is left');
  t.equal(await fsp.readFile(path.join(d, temps[0]!), 'utf8'), 'new', 'the data is only in the temp file');
  t.equal(await removeTempFiles(d), 1, 'which open() removes');
  t.strictSame((await fsp.readdir(d)).sort(), ['state.json']);
});

t.test('a write into a missing directory fails and creates nothing', async (t) => {
  const d = await dir(t);
  t.equal(await errno(writeFileDurable(path.join(d, 'gone', 'f'), 'x')), 'ENOENT');
  t.strictSame(await fsp.readdir(d), []);
});

t.test('a crash before the rename: the old file is intact and the temp file is cleaned', async (t) => {
  const d = await dir(t);
  const file = path.join(d, 'resync.json');
  await writeFileDurable(file, 'old');
  // What a process killed between write and rename leaves: a partial temp file.
  await fsp.writeFile(file + TMP_SUFFIX, 'ne');
  t.equal(await fsp.readFile(file, 'utf8'), 'old', 'readers see the old file');
  t.equal(await removeTempFiles(d), 1);
  t.equal(await fsp.readFile(file, 'utf8'), 'old');
  t.equal(await removeTempFiles(d), 0, 'and nothing more to clean the second time');
});

t.test('commitRename of a temp file that is not there fails with ENOENT and changes nothing', async (t) => {
  const d = await dir(t);
  const file = path.join(d, 'f');
  await writeFileDurable(file, 'old');
  t.equal(await errno(commitRename(path.join(d, 'missing.tmp'), file)), 'ENOENT');
  t.equal(await fsp.readFile(file, 'utf8'), 'old');
});

t.test('unlinkDurable of a file already gone succeeds (a retried delete); of a missing directory fails', async (t) => {
  const d = await dir(t);
  await t.resolves(unlinkDurable(path.join(d, 'never-there')));
  t.equal(await errno(unlinkDurable(path.join(d, 'gone', 'f'))), 'ENOENT', 'the directory fsync reports it');
});

t.test('fsync failing (EIO): the write fails and the old file stays', async (t) => {
  const d = await dir(t);
  const file = path.join(d, 'f');
  await writeFileDurable(file, 'old');
  const eio = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
  const open: typeof fsp.open = async (...args) => {
    const fh = await fsp.open(...args);
    // Only the temp file's data fsync fails; directory fsyncs and reads work.
    if (String(args[0]).endsWith(TMP_SUFFIX)) fh.sync = () => Promise.reject(eio);
    return fh;
  };
  const durable = await t.mockImport<typeof import('../../../common/durable.js')>('../../../common/durable.js', {
    'node:fs': { ...fs, default: fs, promises: { ...fsp, open } },
  });
  t.equal(await errno(durable.writeFileDurable(file, 'new')), 'EIO');
  t.equal(await fsp.readFile(file, 'utf8'), 'old', 'the final name still holds the old data');
  t.equal(await durable.removeTempFiles(d), 1, 'the unsynced temp file is cleaned at open');
  t.equal(await fsp.readFile(file, 'utf8'), 'old');
});
