// A master target volume folder for the applier tests: a store adopted for a sparse replica with an
// all-zero hash table, and staged differentials of random, overlapping extents written into it.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import type { Logger } from '../../../common/log.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import { type MtStore, type MtVolumeState } from '../../../master-target/volume-state.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { HrlWriter } from '../../../proto/hrl.js';
import type { Rng } from '../../seed.js';

/** A fresh volume folder (removed after the test), its store adopted and its replica empty. */
export async function freshVolume(t: Test, prefix: string, geometry: { sizeBytes: number; blockSize: number }, log: Logger): Promise<{ dir: string; replicaFile: string; store: MtStore }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const store = new DiffStore<MtVolumeState>(dir, 'v1', log);
  await store.open();
  await store.adopt({ volumeId: 'v1', sizeBytes: geometry.sizeBytes, blockSize: geometry.blockSize, replicationId: 'r1' });
  const replicaFile = path.join(dir, 'replica.img');
  await (await Replica.createSparse(replicaFile, geometry.sizeBytes)).close();
  await new ReplicaHashes(dir, geometry.sizeBytes, geometry.blockSize, log).initZero();
  return { dir, replicaFile, store };
}

/** Stage differential `seq` of six random extents (1-8 blocks, overlapping) into `store`, applying it to `image` too. */
export async function stageRandomDiff(dir: string, store: MtStore, seq: number, rng: Rng, image: Buffer, blockSize: number): Promise<void> {
  const w = await HrlWriter.create(dir, { volumeId: 'v1', seq, startTimeMs: seq, endTimeMs: seq, volumeSize: image.length, blockSize, consistency: 'CRASH', flags: 0, tags: [] });
  for (let i = 0; i < 6; i++) {
    const blocks = rng.int(1, 9);
    const offset = rng.int(0, image.length / blockSize - blocks) * blockSize;
    const data = rng.bytes(blocks * blockSize);
    await w.append({ offset, length: data.length, crc32c: crc(data), compression: 'NONE', storedLength: data.length }, data);
    data.copy(image, offset);
  }
  await w.commit();
  await store.added(seq);
}
