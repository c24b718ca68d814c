// The master target's hash table of its replica when something is wrong with it: missing, damaged or of
// another geometry, it is rebuilt from the replica's data (never trusted, never guessed); blocks changed
// behind its back are found by a re-read, corrected and persisted. Real replica files.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { loadHashTable, loadHashTableAt, saveHashTable } from '../../../common/hash-table.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import { leafHashes } from '../../../proto/range-hash.js';
import { Rng } from '../../seed.js';

const rng = new Rng('replica-hashes');
const BS = 4096;
// Not a multiple of the 4 MiB read chunk, and a short last block; four chunks, so a seed reads into the
// buffers of chunks it has hashed.
const SIZE = 13 * 1024 * 1024 + 3 * BS + 100;

async function setup(t: Test): Promise<{ dir: string; replica: Replica; logs: Record<string, unknown>[]; hashes: () => ReplicaHashes; actual: () => Promise<BigUint64Array> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-rh-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'replica.img');
  await fsp.writeFile(file, rng.bytes(SIZE));
  const replica = await Replica.open(file, SIZE);
  t.teardown(() => replica.close());
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  return { dir, replica, logs, hashes: () => new ReplicaHashes(dir, SIZE, BS, log), actual: async () => leafHashes(await fsp.readFile(file), BS) };
}

t.test('a missing table is built from the replica and persisted', async (t) => {
  const s = await setup(t);
  const h = s.hashes();
  await h.open(s.replica);
  t.strictSame(h.hashes, await s.actual(), 'one hash per block of the replica, the short last one included');
  t.strictSame(await loadHashTable(path.join(s.dir, 'replica-hashes.bin'), BS, SIZE), h.hashes, 'and saved');
  t.ok(s.logs.some((l) => l.msg === 'replica hashed'));
});

t.test('a damaged table is rebuilt from the data, not loaded', async (t) => {
  const s = await setup(t);
  const file = path.join(s.dir, 'replica-hashes.bin');
  // A table that once was right for other data, then damaged in its body.
  await saveHashTable(file, BS, SIZE, new BigUint64Array(Math.ceil(SIZE / BS)).fill(7n));
  const bytes = await fsp.readFile(file);
  bytes[100] = bytes[100]! ^ 0xff;
  await fsp.writeFile(file, bytes);
  const h = s.hashes();
  await h.open(s.replica);
  t.strictSame(h.hashes, await s.actual(), 'the hashes are those of the replica');
  t.ok(s.logs.some((l) => l.msg === 'replica hash table damaged; rebuilding it from the replica' && /hash table damaged/.test(String(l.err))), 'the damage was logged');
  t.strictSame(await loadHashTable(file, BS, SIZE), h.hashes, 'and the good table replaced it');
});

t.test("a table of another geometry is rebuilt, not loaded", async (t) => {
  const s = await setup(t);
  await saveHashTable(path.join(s.dir, 'replica-hashes.bin'), 512, SIZE, new BigUint64Array(Math.ceil(SIZE / 512)));
  const h = s.hashes();
  await h.open(s.replica);
  t.strictSame(h.hashes, await s.actual());
  t.ok(s.logs.some((l) => /recorded geometry differs/.test(String(l.err))), 'the geometry mismatch was logged');
});

t.test('blocks changed behind its back are found by a re-read, corrected and persisted', async (t) => {
  const s = await setup(t);
  const h = s.hashes();
  await h.open(s.replica);
  const changed = [0, 17, 300, Math.ceil(SIZE / BS) - 1];
  for (const b of changed) await s.replica.write(b * BS, rng.bytes(Math.min(BS, SIZE - b * BS)));
  const rangeBlocks = 256;
  const ranges = Array.from({ length: Math.ceil(SIZE / BS / rangeBlocks) }, (_, i) => i);
  t.equal((await h.reread(s.replica, ranges, rangeBlocks)).length, changed.length, 'exactly the changed blocks differ');
  t.strictSame(h.hashes, await s.actual(), 'the table now matches the data');
  t.strictSame(await loadHashTable(path.join(s.dir, 'replica-hashes.bin'), BS, SIZE), h.hashes, 'and was persisted');
  t.ok(s.logs.some((l) => l.msg === 'replica blocks differ from their recorded hashes; recorded the actual data' && l.blocks === changed.length));
  t.same(await h.reread(s.replica, ranges, rangeBlocks), [], 'a second re-read finds nothing');
  t.same(await h.reread(s.replica, [ranges.length + 5], rangeBlocks), [], 'a range past the end reads nothing');
});

t.test('a sparse replica is hashed as zeros without reading it, and that matches its data', async (t) => {
  const s = await setup(t);
  const file = path.join(s.dir, 'sparse.img');
  const sparse = await Replica.createSparse(file, SIZE);
  t.teardown(() => sparse.close());
  const h = s.hashes();
  await h.initZero();
  t.strictSame(h.hashes, leafHashes(await fsp.readFile(file), BS));
});

t.test('a seed is hashed in the background: ready() waits for the blocks asked for; nothing is saved until the end', async (t) => {
  const s = await setup(t);
  const file = path.join(s.dir, 'replica-hashes.bin');
  // A table left by some other replication: never to be loaded for this replica.
  await saveHashTable(file, BS, SIZE, new BigUint64Array(Math.ceil(SIZE / BS)).fill(7n));
  const h = s.hashes();
  await h.seed(s.replica);
  const blocks = Math.ceil(SIZE / BS);
  t.notOk(await fsp.stat(file).then(() => true, () => false), 'the old table is gone at once');
  // The applier applied a differential with extents while the seed was hashed: its sequence is only noted.
  await h.persist(5);
  t.equal(h.seq, 0, 'the recorded sequence stays what it was (the store keeps the old hashesSeq)');
  t.notOk(await fsp.stat(file).then(() => true, () => false), 'and no partial table is written');
  await h.ready(1);
  t.strictSame(h.hashes.subarray(0, 1), (await s.actual()).subarray(0, 1), 'the first block is there once ready(1) resolves');
  await h.ready(blocks + 10); // past the end: the whole table
  t.strictSame(h.hashes, await s.actual(), 'every block hashed, the short last one included');
  for (let i = 0; i < 50 && !s.logs.some((l) => l.msg === 'replica hashed'); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(s.logs.some((l) => l.msg === 'replica hashed'), 'logged once done');
  t.equal(h.seq, 5, 'the table reflects the sequence noted meanwhile');
  const saved = await loadHashTable(file, BS, SIZE);
  t.strictSame(saved, h.hashes, 'and is saved');
});

t.test('ready() of a table not being seeded resolves at once; a failed seed rejects its waiters', async (t) => {
  const s = await setup(t);
  const h = s.hashes();
  await h.open(s.replica);
  await h.ready(1 << 30);
  t.pass('loaded table: ready');
  const other = await Replica.open(path.join(s.dir, 'replica.img'), SIZE);
  await other.close(); // reads fail
  const g = s.hashes();
  await g.seed(other);
  await t.rejects(g.ready(Math.ceil(SIZE / BS)), 'the waiters learn the seed failed');
  t.ok(s.logs.some((l) => String(l.msg).startsWith('hashing the seeded replica failed')), 'and it is logged');
});

t.test('an abandoned seed stops and saves nothing: it cannot overwrite the table that replaced it', async (t) => {
  const s = await setup(t);
  const file = path.join(s.dir, 'replica-hashes.bin');
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => (open = resolve));
  const slow = Object.create(s.replica) as Replica;
  slow.read = async (offset: number, length: number) => {
    const data = await s.replica.read(offset, length);
    await gate;
    return data;
  };
  const h = s.hashes();
  await h.seed(slow);
  const waiting = h.ready(Math.ceil(SIZE / BS));
  h.abandon();
  await t.rejects(waiting, 'its waiters are failed');
  const next = s.hashes();
  await next.open(s.replica); // the table that replaced it, which then records a write the seed never saw
  const data = rng.bytes(BS);
  await s.replica.write(0, data);
  next.update(0, data);
  await next.persist(1);
  const saved = await fsp.readFile(file);
  open();
  await new Promise((r) => setTimeout(r, 200));
  t.ok((await fsp.readFile(file)).equals(saved), 'the file is the replacing table\'s, untouched');
});

t.test('a group captured while a seed was hashed is not saved from the live table once the seed ends', async (t) => {
  // The applier's commit took its snapshot (null: seeding) before the next group wrote; the seed ended
  // during the commit's fsync. Saving the live table then would record the next group's entries as part
  // of this sequence, before they are durable on the replica.
  const s = await setup(t);
  const h = s.hashes();
  await h.seed(s.replica);
  const captured = h.snapshot();
  t.equal(captured, null, 'nothing is captured while the seed is hashed');
  await h.ready(Math.ceil(SIZE / BS));
  for (let i = 0; i < 200 && !s.logs.some((l) => l.msg === 'replica hashed'); i++) await new Promise((r) => setTimeout(r, 10));
  const table = path.join(s.dir, 'replica-hashes.bin');
  const afterSeed = await loadHashTableAt(table, BS, SIZE);
  t.ok(afterSeed, 'the seed saved its table');
  h.update(0, rng.bytes(BS)); // the next group, written while the commit ran
  await h.persist(7, captured);
  const now = await loadHashTableAt(table, BS, SIZE);
  t.not(now?.seq, 7, 'the table is not recorded as reflecting the committed sequence');
  t.same(now?.hashes, afterSeed?.hashes, 'nor written with the next group\'s entries');
});
