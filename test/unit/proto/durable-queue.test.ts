// The durable queue shared by the agent's journal and the receivers' stores (issue 15 C2): crash recovery
// at open, files deleted only after the state saying they are done is durable, a damaged file replaced by
// a stand-in of the same number with its bytes accounted, and both users seeing the same behaviour.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { silentLogger } from '../../../common/log.js';
import { Journal } from '../../../agent/journal.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { DurableQueue, readStateJson } from '../../../proto/durable-queue.js';
import { FLAG_RESYNC, HrlWriter, decodeHrl, hrlName, listDiffs } from '../../../proto/hrl.js';
import { crc } from '../../../common/checksum.js';
import { Rng } from '../../seed.js';

const rng = new Rng('durable-queue');
const VOL = { volumeId: 'v1', volumeSize: 1 << 20, blockSize: 4096 };

async function scratch(t: Test): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-dq-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A committed differential of one 4 KiB extent in `dir`. */
async function writeDiff(dir: string, seq: number): Promise<void> {
  const data = rng.bytes(4096);
  const w = await HrlWriter.create(dir, { ...VOL, seq, startTimeMs: 1, endTimeMs: 2, consistency: 'CRASH', flags: 0, tags: [] });
  await w.append({ offset: 0, length: 4096, crc32c: crc(data), compression: 'NONE', storedLength: 4096 }, data);
  await w.commit();
}

t.test('open: unfinished files and files already done with are deleted, the rest queued with their bytes', async (t) => {
  const dir = await scratch(t);
  for (const seq of [1, 2, 3, 4]) await writeDiff(dir, seq);
  await fsp.writeFile(path.join(dir, `${hrlName(5)}.tmp`), 'half written');
  const q = new DurableQueue(dir);
  const removed = await q.open(async () => 2);
  t.equal(removed, 1, 'the .tmp left by a crash');
  t.same(q.pending(), [3, 4]);
  t.same(await listDiffs(dir), [3, 4], 'done files deleted on disk');
  const sizes = await Promise.all([3, 4].map((s) => fsp.stat(q.file(s)).then((st) => st.size)));
  t.equal(q.bytes, sizes[0]! + sizes[1]!);
  t.equal(q.last, 4);
});

t.test('doneThrough deletes nothing when recording the state fails', async (t) => {
  const dir = await scratch(t);
  const q = new DurableQueue(dir);
  await q.open(async () => 0);
  for (const seq of [1, 2]) {
    await writeDiff(dir, seq);
    await q.added(seq);
  }
  const bytes = q.bytes;
  await t.rejects(q.doneThrough(2, async () => { throw new Error('disk full'); }), /disk full/);
  t.same(q.pending(), [1, 2], 'still queued');
  t.equal(q.bytes, bytes);
  t.same(await listDiffs(dir), [1, 2], 'still on disk');
  let recorded = false;
  await q.doneThrough(1, async () => { recorded = true; });
  t.ok(recorded);
  t.same(q.pending(), [2]);
  t.same(await listDiffs(dir), [2]);
  t.ok(q.bytes < bytes && q.bytes > 0);
});

t.test('a stand-in replaces the file under the same number, and the queue counts its real size', async (t) => {
  const dir = await scratch(t);
  const q = new DurableQueue(dir);
  await q.open(async () => 0);
  await writeDiff(dir, 1);
  await q.added(1);
  const diff = await q.standIn(1, VOL, FLAG_RESYNC);
  t.equal(diff.header.seq, 1);
  t.equal(diff.header.flags, FLAG_RESYNC);
  t.equal(diff.header.consistency, 'FUZZY');
  t.same(diff.extents, []);
  const onDisk = decodeHrl(await fsp.readFile(q.file(1)), q.file(1));
  t.same(onDisk.header, diff.header, 'what is returned is what was made durable');
  t.equal(q.bytes, (await fsp.stat(q.file(1))).size);
  t.same(q.pending(), [1]);
  await q.doneThrough(1, async () => {});
  t.equal(q.bytes, 0, 'no drift once it is done with');
});

t.test('moveAll moves every queued file aside and empties the queue', async (t) => {
  const dir = await scratch(t);
  const aside = await scratch(t);
  const q = new DurableQueue(dir);
  await q.open(async () => 0);
  for (const seq of [1, 2]) {
    await writeDiff(dir, seq);
    await q.added(seq);
  }
  t.equal(await q.moveAll(aside), 2);
  t.same(q.pending(), []);
  t.equal(q.bytes, 0);
  t.same(await listDiffs(aside), [1, 2]);
  t.same(await listDiffs(dir), []);
});

t.test('state.json: none is null, unreadable or newer is TM_ERR_STATE_CORRUPT', async (t) => {
  const dir = await scratch(t);
  const f = path.join(dir, 'state.json');
  t.equal(await readStateJson(f, 2, 'this agent'), null);
  await fsp.writeFile(f, '{"version": 2, "x": 1}');
  t.same(await readStateJson(f, 2, 'this agent'), { version: 2, x: 1 });
  await fsp.writeFile(f, '{"version": 3}');
  await t.rejects(readStateJson(f, 2, 'this agent'), { code: 'TM_ERR_STATE_CORRUPT', message: /format version 3; this agent reads up to 2/ });
  await fsp.writeFile(f, '{"vers');
  await t.rejects(readStateJson(f, 2, 'this agent'), { code: 'TM_ERR_STATE_CORRUPT' });
});

t.test('the journal and a store recover the same way at open', async (t) => {
  const root = await scratch(t);
  // Journal: acked up to 1 before a crash that left 1 undeleted and a .tmp of 3.
  const j1 = new Journal(path.join(root, 'agent'), 'v1', silentLogger());
  await j1.open({ sizeBytes: VOL.volumeSize, blockSize: VOL.blockSize });
  const block = { offset: 0, length: 4096, data: rng.bytes(4096) };
  for (let i = 0; i < 2; i++) await j1.write({ startTimeMs: 1, endTimeMs: 2, consistency: 'CRASH', flags: 0, tags: [] }, [{ ...block, crc32c: crc(block.data) }]);
  await fsp.writeFile(path.join(root, 'agent', 'state.json'), JSON.stringify({ ...j1.state, ackedSeq: 1 }));
  await fsp.writeFile(`${j1.file(3)}.tmp`, 'x');
  const j2 = new Journal(path.join(root, 'agent'), 'v1', silentLogger());
  await j2.open({ sizeBytes: VOL.volumeSize, blockSize: VOL.blockSize });
  t.same(j2.pending(), [2]);
  t.equal(j2.nextSeq, 3);
  t.same(await listDiffs(j2.dir), [2]);
  t.equal(j2.bytes, (await fsp.stat(j2.file(2))).size);
  // Store: done up to 1, same leftovers.
  const sdir = path.join(root, 'store');
  await fsp.mkdir(sdir);
  for (const seq of [1, 2]) await writeDiff(sdir, seq);
  await fsp.writeFile(path.join(sdir, `${hrlName(3)}.tmp`), 'x');
  await fsp.writeFile(path.join(sdir, 'state.json'), JSON.stringify({ version: 3, replicationId: 'r', sizeBytes: VOL.volumeSize, blockSize: VOL.blockSize, doneSeq: 1 }));
  const s = new DiffStore(sdir, 'v1', silentLogger());
  await s.open();
  t.same(s.pending(), [2]);
  t.equal(s.storedSeq, 2);
  t.same(await listDiffs(sdir), [2]);
  t.equal(s.bytes, (await fsp.stat(s.file(2))).size);
  // Both stand-ins come from the one writer: same shape, their own flags.
  const ss = await s.standIn(2, FLAG_RESYNC);
  t.equal(ss.header.flags, FLAG_RESYNC);
  t.equal(ss.header.volumeSize, VOL.volumeSize);
});
