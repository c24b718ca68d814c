// The applier gives a differential's pooled bodies back (Extent.release) only after its group's commit
// succeeded: by then the replica writes, the hash table and every later read are done with them. A commit
// that fails gives nothing back (the redo reads the files). Staged as the receiver stages them: kept in
// memory, each extent with its own release.
import { promises as fsp } from 'node:fs';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import { silentLogger } from '../../../common/log.js';
import { Applier } from '../../../master-target/applier.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import type { MtStore, MtVolumeState } from '../../../master-target/volume-state.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { HrlWriter } from '../../../proto/hrl.js';
import { Rng } from '../../seed.js';
import { Crash, failOn, withFaults } from '../faults.js';
import { freshVolume } from './staged-volume.js';

const BS = 4096;
const SIZE = 256 * BS;
const DIFFS = 3;
const log = silentLogger();

interface Released { seq: number; doneSeqThen: number }

/** Stage DIFFS differentials kept in memory; each extent's release records what was durable at its call. */
async function staged(t: Test, name: string, onRelease: (seq: number) => void) {
  const rng = new Rng(name);
  const { dir, replicaFile, store } = await freshVolume(t, 'tm-applier-release-', { sizeBytes: SIZE, blockSize: BS }, log);
  const expected = Buffer.alloc(SIZE);
  for (let seq = 1; seq <= DIFFS; seq++) {
    const w = await HrlWriter.create(dir, { volumeId: 'v1', seq, startTimeMs: seq, endTimeMs: seq, volumeSize: SIZE, blockSize: BS, consistency: 'CRASH', flags: 0, tags: [] }, { keep: true });
    for (let i = 0; i < 4; i++) {
      const blocks = rng.int(1, 5);
      const offset = rng.int(0, SIZE / BS - blocks) * BS;
      const data = rng.bytes(blocks * BS);
      await w.append({ offset, length: data.length, crc32c: crc(data), compression: 'NONE', storedLength: data.length }, data, undefined, () => onRelease(seq));
      data.copy(expected, offset);
    }
    await w.commit();
    await store.added(seq, w.diff());
  }
  return { dir, replicaFile, store, expected };
}

async function open(dir: string, replicaFile: string, store: MtStore, faults: { done?: MtStore['done'] } = {}) {
  const replica = await Replica.open(replicaFile, SIZE);
  const hashes = new ReplicaHashes(dir, SIZE, BS, log);
  await hashes.open(replica, { seq: store.state!.hashesSeq ?? 0, doneSeq: store.doneSeq, staged: store.pending() });
  const applier = new Applier('v1', withFaults(store, faults.done ? { done: faults.done } : undefined), replica, hashes, { applied: () => {}, damaged: async () => {} }, log);
  return { applier, replica, close: async () => { await applier.close(); await replica.close(); } };
}

t.test('bodies go back after the commit that made their differential durable, each once', async (t) => {
  const released: Released[] = [];
  let store: MtStore | null = null;
  // At the call: what the store had recorded applied (durable after the replica's fsync).
  const v = await staged(t, 'applier-release', (seq) => released.push({ seq, doneSeqThen: store!.doneSeq }));
  store = v.store;
  const a = await open(v.dir, v.replicaFile, v.store);
  await a.applier.kick();
  await a.close();
  t.equal(v.store.doneSeq, DIFFS, 'everything applied');
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.expected), 'the replica holds the last boundary exactly');
  t.equal(released.length, DIFFS * 4, 'every extent given back, once');
  t.ok(released.every((r) => r.doneSeqThen >= r.seq), 'each only once its differential was recorded applied (durable)');
});

t.test('a commit that fails gives nothing back; the restarted applier reads the files', async (t) => {
  const released: number[] = [];
  const v = await staged(t, 'applier-release-crash', (seq) => released.push(seq));
  const crashing = await open(v.dir, v.replicaFile, v.store, { done: failOn(v.store.done.bind(v.store), 1) });
  const err = await crashing.applier.kick().then(() => null, (e: unknown) => e);
  t.ok(err instanceof Crash, 'the commit failed at the injected crash');
  await crashing.close();
  t.same(released, [], 'no body given back: the commit did not succeed');

  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  const again = await open(v.dir, v.replicaFile, store);
  await again.applier.kick();
  await again.close();
  t.equal(store.doneSeq, DIFFS, 'the restart applies everything from the files');
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.expected), 'exactly');
  t.same(released, [], 'and the bodies of the failed pass stay with the collector');
});
