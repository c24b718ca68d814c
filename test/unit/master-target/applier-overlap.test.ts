// The applier writes the next group while the previous group's commit (replica fsync, table save, state
// write) runs. These tests hold a group's fsync open until the next group has been written, then crash
// at or after it: the restarted applier must end byte-identical, the table saved with a group must name
// only that group's blocks, the next group's before-images must be what the replica held before it, and
// a point snapshot must see the replica exactly at its point. Real replica, store, table and retention.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { loadHashTableAt } from '../../../common/hash-table.js';
import { silentLogger } from '../../../common/log.js';
import { Applier } from '../../../master-target/applier.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import { RetentionLog } from '../../../master-target/retention/retention-log.js';
import { readSegment } from '../../../master-target/retention/segment.js';
import { type MtStore, type MtVolumeState } from '../../../master-target/volume-state.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { leafHashes } from '../../../proto/range-hash.js';
import { Rng } from '../../seed.js';
import { Crash, failOn, withFaults } from '../faults.js';
import { freshVolume, stageRandomDiff } from './staged-volume.js';

const BS = 4096;
const SIZE = 256 * BS;
const log = silentLogger();

interface Volume {
  dir: string;
  replicaFile: string;
  /** The replica's content after each differential (index = seq; 0: before any). */
  images: Buffer[];
  /** Stage the next differential into `store` (the running applier's). */
  stage(store: MtStore): Promise<number>;
}

async function volume(t: Test, rng: Rng): Promise<Volume> {
  const { dir, replicaFile } = await freshVolume(t, 'tm-overlap-', { sizeBytes: SIZE, blockSize: BS }, log);
  const images = [Buffer.alloc(SIZE)];
  const stage = async (into: MtStore): Promise<number> => {
    const seq = images.length;
    const image = Buffer.from(images.at(-1)!);
    await stageRandomDiff(dir, into, seq, rng, image, BS);
    images.push(image);
    return seq;
  };
  return { dir, replicaFile, images, stage };
}

interface Parts { replica: Replica; hashes: ReplicaHashes; store: MtStore; retention: RetentionLog }
type Faults = (real: Parts, applier: () => Applier) => { replica?: Partial<Replica>; store?: Partial<MtStore> };

async function open(v: Volume, faults?: Faults, hooks: Partial<ConstructorParameters<typeof Applier>[4]> = {}): Promise<Parts & { applier: Applier; close(): Promise<void> }> {
  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  const replica = await Replica.open(v.replicaFile, SIZE);
  const hashes = new ReplicaHashes(v.dir, SIZE, BS, log);
  await hashes.open(replica, { seq: store.state!.hashesSeq ?? 0, doneSeq: store.doneSeq, staged: store.pending() });
  const retention = new RetentionLog(path.join(v.dir, 'retention'), 'v1', { sizeBytes: SIZE, blockSize: BS }, { policy: { tiers: [], windowMs: 1e12, appWindowMs: 1e12, pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  let a: Applier | null = null;
  const f = faults?.({ replica, hashes, store, retention }, () => a!) ?? {};
  a = new Applier('v1', withFaults(store, f.store), withFaults(replica, f.replica), hashes, { applied: () => {}, damaged: async () => {}, ...hooks }, log, retention);
  const applier = a;
  return { applier, replica, hashes, store, retention, close: async () => { await applier.close(); await replica.close(); } };
}

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 5))) if (cond()) return true;
  return cond();
}

/**
 * The first replica fsync (group 1 = differential 1) stages differentials 2 and 3 and waits until the
 * applier has written them (the overlap), then does `then` (the real fsync, or a crash).
 */
function overlapAtFirstSync(v: Volume, state: { writes: number; overlapped: boolean }, then: 'sync' | 'crash'): Faults {
  return ({ replica, store }, applier) => ({
    replica: {
      writeMany: async (offsets: number[], data: Buffer[]) => {
        state.writes++;
        await replica.writeMany(offsets, data);
      },
      ...firstSync(replica, store, applier, v, state, then),
    },
  });
}

function firstSync(replica: Replica, store: MtStore, applier: () => Applier, v: Volume, state: { writes: number; overlapped: boolean }, then: 'sync' | 'crash'): Partial<Replica> {
  let calls = 0;
  return {
    sync: async () => {
      if (++calls === 1) {
        const before = state.writes;
        await v.stage(store);
        await v.stage(store);
        void applier().kick().catch(() => {});
        // Differentials 2 and 3: at least one write each.
        state.overlapped = await until(() => state.writes >= before + 2, 3000);
        if (then === 'crash') throw new Crash('crash during the first group\'s fsync');
      }
      await replica.sync();
    },
  };
}

async function checkRestart(t: Test, v: Volume, last: number): Promise<void> {
  const restarted = await open(v);
  await restarted.applier.kick();
  t.equal(restarted.store.doneSeq, last, 'the restarted applier applied everything staged');
  await restarted.close();
  const data = await fsp.readFile(v.replicaFile);
  t.ok(data.equals(v.images[last]!), 'the replica is byte for byte the last differential\'s boundary');
  const saved = await loadHashTableAt(path.join(v.dir, 'replica-hashes.bin'), BS, SIZE);
  t.strictSame(saved?.hashes, leafHashes(data, BS), 'and its saved hash table matches its data');
}

t.test('killed during a group\'s fsync while the next group was written: a restart ends at the last boundary, exactly', async (t) => {
  const v = await volume(t, new Rng('overlap-crash-fsync'));
  const first = await open(v);
  await v.stage(first.store);
  await first.close();
  const state = { writes: 0, overlapped: false };
  const crashing = await open(v, overlapAtFirstSync(v, state, 'crash'));
  const err = await crashing.applier.kick().then(() => null, (e: unknown) => e);
  t.ok(err instanceof Crash, 'the applier stopped at the injected crash');
  t.ok(state.overlapped, 'differentials 2 and 3 were written while differential 1\'s fsync ran');
  await crashing.close();
  const onDisk = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await onDisk.open();
  t.equal(onDisk.doneSeq, 0, 'nothing is marked applied');
  t.same(onDisk.pending(), [1, 2, 3], 'and all are still staged');
  await checkRestart(t, v, 3);
});

t.test('the table saved with a group names only that group\'s blocks, not those of the group written meanwhile', async (t) => {
  const v = await volume(t, new Rng('overlap-crash-done'));
  const first = await open(v);
  await v.stage(first.store);
  await first.close();
  const state = { writes: 0, overlapped: false };
  // The first group's fsync waits for the next group's writes, then its table is saved; killed before doneSeq.
  const crashing = await open(v, (real, applier) => ({
    ...overlapAtFirstSync(v, state, 'sync')(real, applier),
    store: { done: failOn(real.store.done.bind(real.store), 1) },
  }));
  const err = await crashing.applier.kick().then(() => null, (e: unknown) => e);
  t.ok(err instanceof Crash, 'the applier stopped at the injected crash');
  t.ok(state.overlapped, 'differentials 2 and 3 were written while differential 1\'s fsync ran');
  await crashing.close();
  const saved = await loadHashTableAt(path.join(v.dir, 'replica-hashes.bin'), BS, SIZE);
  t.equal(saved?.seq, 1, 'the table was saved as reflecting differential 1');
  t.notSame(leafHashes(v.images[1]!, BS), leafHashes(v.images[3]!, BS), '(differentials 2 and 3 change blocks)');
  t.strictSame(saved?.hashes, leafHashes(v.images[1]!, BS), 'and holds exactly the hashes of differential 1\'s boundary');
  await checkRestart(t, v, 3);
});

t.test('before-images of a group written during the previous commit are what the replica held before it; acks in order', async (t) => {
  const v = await volume(t, new Rng('overlap-retention'));
  const first = await open(v);
  await v.stage(first.store);
  await first.close();
  const state = { writes: 0, overlapped: false };
  const acked: number[] = [];
  const a = await open(v, overlapAtFirstSync(v, state, 'sync'), { applied: (seq) => acked.push(seq) });
  await a.applier.kick();
  await until(() => a.store.doneSeq === 3);
  const { retention } = a;
  await a.close();
  t.ok(state.overlapped, 'differentials 2 and 3 were written while differential 1\'s fsync ran');
  t.same(acked, [1, 3], 'group 1 acked, then group 2 (differentials 2 and 3)');
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.images[3]!), 'the replica is the last boundary');
  for (const seq of [2, 3]) {
    const seg = retention.segments.find((s) => s.fromSeq === seq && s.toSeq === seq);
    t.ok(seg, `differential ${seq} has its segment`);
    let images = 0;
    for await (const img of readSegment(seg!.file)) {
      images++;
      t.ok(img.data.equals(v.images[seq - 1]!.subarray(img.offset, img.offset + img.data.length)), `differential ${seq}: the before-image at ${img.offset} is the replica at ${seq - 1}`);
    }
    t.ok(images > 0, `differential ${seq} kept before-images`);
  }
});

t.test('a point snapshot sees the replica exactly at its point: nothing of the next group is written meanwhile', async (t) => {
  const v = await volume(t, new Rng('overlap-snapshot'));
  const seen: Array<{ seq: number; exact: boolean }> = [];
  let parts: (Parts & { applier: Applier }) | null = null;
  const a = await open(v, undefined, {
    pointTakesReplica: true,
    point: async (p) => {
      // Differentials staged while the snapshot is taken must wait for it.
      if (p.seq === 1) {
        await v.stage(parts!.store);
        await v.stage(parts!.store);
        void parts!.applier.kick().catch(() => {});
        await new Promise((r) => setTimeout(r, 200));
      }
      seen.push({ seq: p.seq, exact: (await fsp.readFile(v.replicaFile)).equals(v.images[p.seq]!) });
    },
  });
  parts = a;
  await v.stage(a.store);
  await a.applier.kick();
  await until(() => a.store.doneSeq === 3);
  await a.close();
  t.same(seen, [1, 2, 3].map((seq) => ({ seq, exact: true })), 'each point taken with the replica exactly at it');
});
