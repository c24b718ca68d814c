// The applier killed between each of its durable steps (some extents written, replica written but not
// fsync'd, fsync'd but hashes not saved, hashes saved but the differential not marked applied): a
// restarted applier over what is on disk ends with the replica at the last differential's boundary,
// byte for byte, with its hash table matching the data. The crash is injected through the collaborators
// the applier is built with (real replica, hash table and store, one call of which throws).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { loadHashTable } from '../../../common/hash-table.js';
import { silentLogger } from '../../../common/log.js';
import { Applier } from '../../../master-target/applier.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { leafHashes } from '../../../proto/range-hash.js';
import { Rng } from '../../seed.js';
import { Crash, failOn, withFaults } from '../faults.js';
import { freshVolume, stageRandomDiff } from './staged-volume.js';
import { type MtVolumeState, type MtStore } from '../../../master-target/volume-state.js';

const BS = 4096;
const SIZE = 256 * BS;
const DIFFS = 3;
const log = silentLogger();

interface Volume { dir: string; replicaFile: string; expected: Buffer }

/** A store with DIFFS staged differentials whose extents overlap each other, and the image they lead to. */
async function staged(t: Test, rng: Rng): Promise<Volume> {
  const { dir, replicaFile, store } = await freshVolume(t, 'tm-applier-', { sizeBytes: SIZE, blockSize: BS }, log);
  const expected = Buffer.alloc(SIZE);
  for (let seq = 1; seq <= DIFFS; seq++) await stageRandomDiff(dir, store, seq, rng, expected, BS);
  return { dir, replicaFile, expected };
}

interface Parts { replica: Replica; hashes: ReplicaHashes; store: MtStore }
type Faults = (real: Parts) => { replica?: Partial<Replica>; hashes?: Partial<ReplicaHashes>; store?: Partial<MtStore> };

/** An applier over the volume as it is on disk, its collaborators optionally given faults. */
async function applier(v: Volume, faults?: Faults, hooks: Partial<ConstructorParameters<typeof Applier>[4]> = {}): Promise<{ applier: Applier; store: MtStore; close(): Promise<void> }> {
  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  const replica = await Replica.open(v.replicaFile, SIZE);
  const hashes = new ReplicaHashes(v.dir, SIZE, BS, log);
  // As the master target attaches: the table must reflect what the store says (or a staged sequence).
  await hashes.open(replica, { seq: store.state!.hashesSeq ?? 0, doneSeq: store.doneSeq, staged: store.pending() });
  const f = faults?.({ replica, hashes, store }) ?? {};
  const a = new Applier('v1', withFaults(store, f.store), withFaults(replica, f.replica), withFaults(hashes, f.hashes), { applied: () => {}, damaged: async () => {}, ...hooks }, log);
  return { applier: a, store, close: async () => { await a.close(); await replica.close(); } };
}

// The three staged differentials are applied as one group (group commit): each crash lands inside it,
// after the first differential's extents were written.
const crashes: Array<[string, Faults]> = [
  ['after some of the group\'s extents were written', ({ replica }) => ({ replica: { writeMany: failOn(replica.writeMany.bind(replica), 2) } })],
  ['after its extents were written, before the replica fsync', ({ replica }) => ({ replica: { sync: failOn(replica.sync.bind(replica), 1) } })],
  ['after the replica fsync, before the hash table was saved', ({ hashes }) => ({ hashes: { persist: failOn(hashes.persist.bind(hashes), 1) } })],
  ['after the hash table was saved, before it was marked applied', ({ store }) => ({ store: { done: failOn(store.done.bind(store), 1) } })],
];

for (const [when, fault] of crashes) {
  t.test(`killed ${when}: a restart ends at the last boundary, exactly`, async (t) => {
    const v = await staged(t, new Rng(`applier:${when}`));
    const crashing = await applier(v, fault);
    const err = await crashing.applier.kick().then(() => null, (e: unknown) => e);
    t.ok(err instanceof Crash, 'the applier stopped at the injected crash');
    await crashing.close();
    const onDisk = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
    await onDisk.open();
    t.equal(onDisk.doneSeq, 0, 'no differential of the interrupted group is marked applied');
    t.same(onDisk.pending(), [1, 2, 3], 'and all are still staged');

    const restarted = await applier(v);
    await restarted.applier.kick();
    t.equal(restarted.store.doneSeq, DIFFS, 'the restarted applier applied everything staged');
    await restarted.close();
    const replica = await fsp.readFile(v.replicaFile);
    t.ok(replica.equals(v.expected), 'the replica is byte for byte the last differential\'s boundary');
    t.strictSame(await loadHashTable(path.join(v.dir, 'replica-hashes.bin'), BS, SIZE), leafHashes(replica, BS), 'and its saved hash table matches its data');
  });
}

t.test('while a seed is hashed in the background, a differential waits for its blocks to be hashed first', async (t) => {
  const v = await staged(t, new Rng('applier-seed'));
  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  const replica = await Replica.open(v.replicaFile, SIZE);
  t.teardown(() => replica.close());
  const hashes = new ReplicaHashes(v.dir, SIZE, BS, log);
  // The seed's read returns the data as it was, but late: an apply meanwhile must not be hashed over.
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => (open = resolve));
  const slow = Object.create(replica) as Replica;
  slow.read = async (offset: number, length: number) => {
    const data = await replica.read(offset, length);
    await gate;
    return data;
  };
  await hashes.seed(slow);
  const a = new Applier('v1', store, replica, hashes, { applied: () => {}, damaged: async () => {} }, log);
  const applying = a.kick();
  await new Promise((r) => setTimeout(r, 200));
  t.equal(store.doneSeq, 0, 'nothing applied while the blocks are not hashed yet');
  open();
  await applying;
  await a.close();
  t.equal(store.doneSeq, DIFFS, 'then every differential is applied');
  const data = await fsp.readFile(v.replicaFile);
  t.ok(data.equals(v.expected), 'the replica holds what they wrote');
  t.strictSame(hashes.hashes, leafHashes(data, BS), 'and the table the hashes of that data, not of the data the seed read before');
});

t.test('group commit: the staged differentials are made durable with one fsync, then acked once, never before', async (t) => {
  const v = await staged(t, new Rng('applier-group'));
  let syncs = 0;
  const acked: number[] = [];
  const points: Array<{ seq: number; doneSeq: number }> = [];
  let store: MtStore | null = null;
  const a = await applier(v, ({ replica }) => ({ replica: { sync: async () => { syncs++; t.same(acked, [], 'nothing acked before the fsync'); await replica.sync(); } } }), {
    applied: (seq) => acked.push(seq),
    point: async (p) => { points.push({ seq: p.seq, doneSeq: store!.doneSeq }); },
  });
  store = a.store;
  await a.applier.kick();
  await a.close();
  t.equal(syncs, 1, 'one replica fsync for the three differentials');
  t.same(acked, [DIFFS], 'acknowledged once, up to the last');
  t.same(points.map((p) => p.seq), [1, 2, 3], 'every differential\'s point is still recorded, in order');
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.expected), 'the replica is the last boundary');
  const onDisk = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await onDisk.open();
  t.equal(onDisk.state?.lastCrashPoint?.seq, DIFFS, 'the state names the newest point');
});

t.test('a point that reads the replica (a snapshot) ends the group: the replica is at that point when it runs', async (t) => {
  const v = await staged(t, new Rng('applier-group-points'));
  let syncs = 0;
  const seen: Array<[number, number]> = [];
  let store: MtStore | null = null;
  const a = await applier(v, ({ replica }) => ({ replica: { sync: async () => { syncs++; await replica.sync(); } } }), {
    pointTakesReplica: true,
    point: async (p) => { seen.push([p.seq, store!.doneSeq]); },
  });
  store = a.store;
  await a.applier.kick();
  await a.close();
  t.equal(syncs, DIFFS, 'one group per point');
  t.same(seen, [[1, 1], [2, 2], [3, 3]], 'each point taken with the replica committed exactly there');
});
