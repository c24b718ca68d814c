// The replica's identity (issue 11 item 5): a file put in its place is told apart from the one open, even a
// byte-identical copy or one given the old inode number; and a volume state from a newer Tidemark is refused.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { silentLogger } from '../../../common/log.js';
import { replacedHow, type ReplicaIdentity } from '../../../common/replica-identity.js';
import { Replica } from '../../../master-target/replica.js';
import { DiffStore, STORE_STATE_VERSION } from '../../../proto/diff-store.js';
import { Rng } from '../../seed.js';
import { type MtVolumeState } from '../../../master-target/volume-state.js';

const SIZE = 1 << 20;
const rng = new Rng('replica-identity');

async function scratch(t: Test): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-rid-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('the path still naming the open replica is not a replacement', async (t) => {
  const dir = await scratch(t);
  const p = path.join(dir, 'replica.img');
  await fsp.writeFile(p, rng.bytes(SIZE));
  const r = await Replica.open(p, SIZE);
  t.teardown(() => r.close());
  await r.write(0, rng.bytes(4096));
  t.equal(await r.replaced(), null, 'writing through it changes nothing');
  t.equal(r.identity.kind, 'file');
});

t.test('a byte-identical copy moved over the replica is another file', async (t) => {
  const dir = await scratch(t);
  const p = path.join(dir, 'replica.img');
  await fsp.writeFile(p, rng.bytes(SIZE));
  const r = await Replica.open(p, SIZE);
  t.teardown(() => r.close());
  await fsp.copyFile(p, `${p}.copy`);
  await fsp.rename(`${p}.copy`, p);
  t.match(await r.replaced(), /^inode \d+:\d+ is now \d+:\d+$/, 'told apart by its inode');
});

t.test('a removed replica is reported, not written on', async (t) => {
  const dir = await scratch(t);
  const p = path.join(dir, 'replica.img');
  await fsp.writeFile(p, rng.bytes(SIZE));
  const r = await Replica.open(p, SIZE);
  t.teardown(() => r.close());
  await fsp.rm(p);
  t.match(await r.replaced(), /no longer exists/);
});

t.test('a file re-created with the same inode number is still another file (birth time)', async (t) => {
  const was: ReplicaIdentity = { kind: 'file', dev: '2049', ino: '77', birthNs: '1000', rdev: '0', size: SIZE };
  t.equal(replacedHow(was, { ...was }), null, 'the same file');
  t.match(replacedHow(was, { ...was, birthNs: '2000' }), /created anew/, 'reused inode number, new birth time');
  t.equal(replacedHow(was, { ...was, birthNs: '0' }), null, 'no birth time recorded: inode alone decides');
  t.match(replacedHow(was, { ...was, size: SIZE * 2 }), /size/, 'another size');
  const dev: ReplicaIdentity = { kind: 'device', dev: '0', ino: '0', birthNs: '0', rdev: '1792', size: SIZE };
  t.match(replacedHow(dev, { ...dev, rdev: '1793' }), /device number 1792 is now 1793/, 'a device node naming another device');
  t.match(replacedHow(dev, was), /block device, now an image file/);
});

t.test('cp --remove-destination over a closed replica gives a file the recorded identity does not match', async (t) => {
  const dir = await scratch(t);
  const p = path.join(dir, 'replica.img');
  await fsp.writeFile(p, rng.bytes(SIZE));
  const first = await Replica.open(p, SIZE);
  const recorded = first.identity;
  await first.close();
  await fsp.writeFile(path.join(dir, 'older'), rng.bytes(SIZE));
  execFileSync('cp', ['--remove-destination', path.join(dir, 'older'), p]);
  const again = await Replica.open(p, SIZE);
  t.teardown(() => again.close());
  t.not(replacedHow(recorded, again.identity), null, 'the file now at the path is not the one recorded');
});

t.test('a volume state written by a newer Tidemark is refused with a clear error', async (t) => {
  const dir = await scratch(t);
  await fsp.writeFile(path.join(dir, 'state.json'), JSON.stringify({ version: STORE_STATE_VERSION + 1, replicationId: 'r', sizeBytes: SIZE, blockSize: 4096, doneSeq: 3 }));
  const store = new DiffStore<MtVolumeState>(dir, 'vol1', silentLogger());
  await t.rejects(store.open(), { code: 'TM_ERR_STATE_CORRUPT', message: new RegExp(`format version ${STORE_STATE_VERSION + 1}; this Tidemark reads up to ${STORE_STATE_VERSION}`) });
});

t.test('the recorded identity is written as state version 3', async (t) => {
  const dir = await scratch(t);
  await fsp.writeFile(path.join(dir, 'state.json'), JSON.stringify({ version: 2, replicationId: 'r', sizeBytes: SIZE, blockSize: 4096, doneSeq: 3 }));
  const store = new DiffStore<MtVolumeState>(dir, 'vol1', silentLogger());
  await store.open();
  await fsp.writeFile(path.join(dir, 'replica.img'), rng.bytes(SIZE));
  const r = await Replica.open(path.join(dir, 'replica.img'), SIZE);
  t.teardown(() => r.close());
  await store.update({ replica: r.identity });
  const saved = JSON.parse(await fsp.readFile(path.join(dir, 'state.json'), 'utf8')) as { version: number; replica: ReplicaIdentity; doneSeq: number };
  t.equal(saved.version, 3);
  t.same(saved.replica, r.identity);
  t.equal(saved.doneSeq, 3, 'the rest of the state kept');
});
