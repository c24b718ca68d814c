// A group's before-images are made together (master-target/retention/before-images.ts): nothing of the
// group is written until every segment is durable, and differential k's before-image of a block is the
// newest earlier differential of the group that wrote it, else the replica's bytes. Differentials here
// overlap each other (across the group and within one differential, the volume's short last block
// included); every point must recover byte for byte, also after a crash between the segments' sync and
// the first replica write, and after one part-way through the group's writes. Real applier, replica, store,
// table and retention log.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import { silentLogger } from '../../../common/log.js';
import { Applier } from '../../../master-target/applier.js';
import { recoverPoint, type RecoverySource } from '../../../master-target/recover.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import { RetentionLog } from '../../../master-target/retention/retention-log.js';
import { readSegment, segmentName } from '../../../master-target/retention/segment.js';
import { currentPoint, type MtStore, type MtVolumeState } from '../../../master-target/volume-state.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { HrlWriter } from '../../../proto/hrl.js';
import { Rng } from '../../seed.js';
import { Crash, withFaults } from '../faults.js';
import { freshVolume } from './staged-volume.js';

const BS = 4096;
/** 48 whole blocks and a short last one: an extent may end inside a block, at the volume's end. */
const SIZE = 48 * BS + 1024;
const LAST = 48 * BS;
const DIFFS = 7;
const log = silentLogger();

interface Volume {
  dir: string;
  replicaFile: string;
  /** The replica's content after each differential (index = seq; 0: before any). */
  images: Buffer[];
  stage(store: MtStore): Promise<void>;
}

/**
 * Differential k writes a run of blocks that the next ones overwrite in part, an extent inside that run
 * (the same differential twice over some blocks), the short last block every other time, and a random run.
 */
async function volume(t: Test, label: string): Promise<Volume> {
  const rng = new Rng(label);
  const { dir, replicaFile } = await freshVolume(t, 'tm-before-images-', { sizeBytes: SIZE, blockSize: BS }, log);
  const images = [Buffer.alloc(SIZE)];
  const stage = async (store: MtStore): Promise<void> => {
    const seq = images.length;
    const image = Buffer.from(images.at(-1)!);
    const hot = (seq * 2) % 8;
    const extents = [
      { offset: hot * BS, length: 4 * BS },
      { offset: (hot + 1) * BS, length: 2 * BS },
      ...(seq % 2 === 0 ? [{ offset: LAST, length: SIZE - LAST }] : []),
      { offset: rng.int(10, 44) * BS, length: rng.int(1, 5) * BS },
    ];
    const w = await HrlWriter.create(dir, { volumeId: 'v1', seq, startTimeMs: seq, endTimeMs: seq, volumeSize: SIZE, blockSize: BS, consistency: 'CRASH', flags: 0, tags: [] });
    for (const e of extents) {
      const data = rng.bytes(e.length);
      await w.append({ offset: e.offset, length: e.length, crc32c: crc(data), compression: 'NONE', storedLength: e.length }, data);
      data.copy(image, e.offset);
    }
    await w.commit();
    await store.added(seq);
    images.push(image);
  };
  return { dir, replicaFile, images, stage };
}

interface Opened { applier: Applier; store: MtStore; retention: RetentionLog; close(): Promise<void> }

async function open(v: Volume, faults?: (replica: Replica, retention: RetentionLog) => Partial<Replica>): Promise<Opened> {
  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  const replica = await Replica.open(v.replicaFile, SIZE);
  const hashes = new ReplicaHashes(v.dir, SIZE, BS, log);
  await hashes.open(replica, { seq: store.state!.hashesSeq ?? 0, doneSeq: store.doneSeq, staged: store.pending() });
  const retention = new RetentionLog(path.join(v.dir, 'retention'), 'v1', { sizeBytes: SIZE, blockSize: BS }, { policy: { tiers: [], windowMs: 1e12, appWindowMs: 1e12, pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  const applier = new Applier('v1', store, withFaults(replica, faults?.(replica, retention)), hashes, { applied: () => {}, damaged: async () => {} }, log, retention);
  return { applier, store, retention, close: async () => { await applier.close(); await replica.close(); } };
}

/** Differential 1 applied alone (the first point: from differential 2 on, before-images are kept), then 2..DIFFS staged. */
async function prepare(t: Test, label: string): Promise<Volume> {
  const v = await volume(t, label);
  const first = await open(v);
  await v.stage(first.store);
  await first.applier.kick();
  await first.close();
  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  for (let seq = 2; seq <= DIFFS; seq++) await v.stage(store);
  return v;
}

/** Restart, apply everything, then recover every point and compare it with the replica as it was. */
async function checkEveryPoint(t: Test, v: Volume): Promise<void> {
  const a = await open(v);
  await a.applier.kick();
  t.equal(a.store.doneSeq, DIFFS, 'every differential applied');
  await a.close();
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.images[DIFFS]!), 'the replica is the last boundary');
  const retention = new RetentionLog(path.join(v.dir, 'retention'), 'v1', { sizeBytes: SIZE, blockSize: BS }, { policy: { tiers: [], windowMs: 1e12, appWindowMs: 1e12, pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  const store = new DiffStore<MtVolumeState>(v.dir, 'v1', log);
  await store.open();
  t.same(retention.segments.map((s) => [s.fromSeq, s.toSeq]), Array.from({ length: DIFFS - 1 }, (_, i) => [i + 2, i + 2]), 'one segment per differential after the first point');
  for (const s of retention.segments) {
    const blocks = new Set<number>();
    let overlap = false;
    for await (const img of readSegment(s.file)) {
      for (let b = img.offset / BS; b < (img.offset + img.data.length) / BS; b++) overlap ||= blocks.has(b) || !blocks.add(b);
      t.ok(img.data.equals(v.images[s.fromSeq - 1]!.subarray(img.offset, img.offset + img.data.length)), `segment ${s.fromSeq}: the image at ${img.offset} is the replica at ${s.fromSeq - 1}`);
    }
    t.notOk(overlap, `segment ${s.fromSeq}: no two records cover one block (FORMAT.md §10)`);
  }
  const src: RecoverySource = {
    volumeId: 'v1', replicaPath: v.replicaFile, sizeBytes: SIZE, blockSize: BS, retention,
    doneSeq: () => store.doneSeq, currentPoint: () => currentPoint(store.state), hashes: () => null, hold: (fn) => fn(),
  };
  const outDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-before-images-out-'));
  t.teardown(() => fsp.rm(outDir, { recursive: true, force: true }));
  for (let seq = 1; seq <= DIFFS; seq++) {
    const out = path.join(outDir, `p${seq}.img`);
    await recoverPoint(src, { select: { seq }, out });
    t.ok((await fsp.readFile(out)).equals(v.images[seq]!), `point ${seq} recovers byte for byte`);
  }
}

t.test('one group of overlapping differentials: every point recovers byte for byte', async (t) => {
  const v = await prepare(t, 'before-images-group');
  // The group's differentials overlap: later ones take before-images of blocks earlier ones wrote.
  t.ok(v.images.slice(2).some((img, i) => !img.subarray(0, 8 * BS).equals(v.images[i + 1]!.subarray(0, 8 * BS))), '(differentials rewrite the hot blocks)');
  let writes = 0;
  const firstWrite: string[] = [];
  const a = await open(v, (replica, retention) => ({
    writeMany: async (offsets: number[], data: Buffer[]) => {
      if (writes++ === 0) firstWrite.push(...(await fsp.readdir(retention.dir)));
      await replica.writeMany(offsets, data);
    },
  }));
  await a.applier.kick();
  await a.close();
  t.ok(writes >= DIFFS - 1, 'the differentials were written');
  for (let seq = 2; seq <= DIFFS; seq++) t.ok(firstWrite.includes(segmentName(seq, seq)), `segment ${seq} was in place before the group's first replica write`);
  await checkEveryPoint(t, v);
});

t.test('killed after the group\'s segments are durable, before its first replica write: every point recovers', async (t) => {
  const v = await prepare(t, 'before-images-crash-before-write');
  const a = await open(v, () => ({ writeMany: () => Promise.reject(new Crash('crash before the first replica write')) }));
  const err = await a.applier.kick().then(() => null, (e: unknown) => e);
  t.ok(err instanceof Crash, 'the applier stopped at the injected crash');
  await a.close();
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.images[1]!), 'nothing of the group reached the replica');
  const names = await fsp.readdir(path.join(v.dir, 'retention'));
  t.same(names.filter((n) => n.endsWith('.tmrl')).sort(), Array.from({ length: DIFFS - 1 }, (_, i) => segmentName(i + 2, i + 2)), 'every segment of the group is in place');
  t.notOk(names.some((n) => n.endsWith('.tmp')), 'and no temp file is left');
  await checkEveryPoint(t, v);
});

t.test('killed part-way through the group\'s replica writes: the redo keeps the segments and every point recovers', async (t) => {
  const v = await prepare(t, 'before-images-crash-mid-write');
  let calls = 0;
  const a = await open(v, (replica) => ({
    writeMany: async (offsets: number[], data: Buffer[]) => {
      // Differentials 2 and 3 reach the replica (the redo must not take before-images from it), then a crash.
      if (++calls === 3) throw new Crash('crash in the middle of the group\'s writes');
      await replica.writeMany(offsets, data);
    },
  }));
  const err = await a.applier.kick().then(() => null, (e: unknown) => e);
  t.ok(err instanceof Crash, 'the applier stopped at the injected crash');
  await a.close();
  t.ok((await fsp.readFile(v.replicaFile)).equals(v.images[3]!), 'the replica holds differentials 2 and 3, unacknowledged');
  await checkEveryPoint(t, v);
});
