// A replica byte flipped behind the master target and then overwritten by a differential before any verify
// saw it used to live on in that differential's before-image: older points recovered the flipped byte
// (the soak's replica-flip). The before-image is now checked against the hash table, and the points that
// would read the damage are withdrawn; every point still listed recovers exactly.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import type { RecoveryPoint } from '../../../master-target/volume-state.js';
import { leafHashes } from '../../../proto/range-hash.js';
import { recoverPoint, type RecoverySource } from '../../../master-target/recover.js';
import { Replica } from '../../../master-target/replica.js';
import { RetentionLog } from '../../../master-target/retention/retention-log.js';
import { Rng } from '../../seed.js';

const BS = 512;
const BLOCKS = 32;
const SIZE = BS * BLOCKS;
const KEEP_ALL = { windowMs: 1e12, appWindowMs: 1e12, tiers: [], pinTags: [] };
const rng = new Rng('retention-damage');

/** A replica applying differentials the way the applier does: before-images checked against the table kept in step. */
async function setup(t: Test) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-damage-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, rng.bytes(SIZE));
  const replica = await Replica.open(replicaPath, SIZE);
  t.teardown(() => replica.close());
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy: KEEP_ALL, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  const hashes = leafHashes(await replica.read(0, SIZE), BS);
  const states = new Map<number, Buffer>([[0, await replica.read(0, SIZE)]]);
  let doneSeq = 0;
  let last: RecoveryPoint = { seq: 0, atMs: 0, consistency: 'CRASH', tags: [], appliedAt: 0 };
  const apply = async (blocks: number[]): Promise<void> => {
    const seq = doneSeq + 1;
    const tip: RecoveryPoint = { seq, atMs: seq * 1000, consistency: 'CRASH', tags: [], appliedAt: 0 };
    const extents = blocks.map((b) => ({ offset: b * BS, length: BS }));
    await retention.beforeApply(seq, extents, replica, last.seq === doneSeq ? last : null, tip, hashes);
    for (const e of extents) {
      const data = rng.bytes(BS);
      await replica.write(e.offset, data);
      hashes.set(leafHashes(data, BS), e.offset / BS);
    }
    doneSeq = seq;
    last = tip;
    states.set(seq, await replica.read(0, SIZE));
  };
  const flip = async (block: number): Promise<void> => {
    const b = await replica.read(block * BS + 7, 1);
    b[0]! ^= 0x10;
    await replica.write(block * BS + 7, b);
  };
  const src: RecoverySource = {
    volumeId: 'v', replicaPath, sizeBytes: SIZE, blockSize: BS, retention,
    doneSeq: () => doneSeq, currentPoint: () => (last.seq === doneSeq ? last : null), hashes: () => null, hold: (fn) => fn(),
  };
  /** Every listed point recovered and compared with the replica as it was then. */
  const listedRecoverExactly = async (t: Test): Promise<number[]> => {
    const listed = retention.points(doneSeq, src.currentPoint()).map((p) => p.seq);
    for (const seq of listed) {
      const out = path.join(dir, `out-${seq}.img`);
      await recoverPoint(src, { select: { seq }, out });
      t.ok((await fsp.readFile(out)).equals(states.get(seq)!), `listed point ${seq} recovers exactly`);
      await fsp.rm(out);
    }
    return listed;
  };
  return { replica, retention, hashes, apply, flip, listedRecoverExactly, doneSeq: () => doneSeq, logs };
}

t.test('a flipped block overwritten before any verify: the points that would recover it are withdrawn', async (t) => {
  const s = await setup(t);
  await s.apply([3, 4]); // 1
  await s.apply([5]); // 2: the last write of block 5 before the damage
  await s.apply([9]); // 3
  await s.flip(5);
  await s.apply([5, 6]); // 4: overwrites the flipped block; its before-image holds the flip
  await s.apply([1]); // 5
  const listed = await s.listedRecoverExactly(t);
  t.same(listed, [0, 1, 4, 5], 'points 2 and 3 (block 5 as written by 2) are no longer listed; the others are');
  t.same(s.retention.stats.damagedPoints, [[2, 3]], 'status names the withdrawn points');
  const damage = s.logs.filter((l) => l.code === 'TM_ERR_REPLICA_DAMAGED');
  t.equal(damage.length, 1, 'the damage is logged once with TM_ERR_REPLICA_DAMAGED');
  t.same(damage[0]?.points, [2, 3], 'naming the withdrawn points');
});

t.test('damage a verify found, repaired later: withdrawn until the repair, and what follows is good', async (t) => {
  const s = await setup(t);
  await s.apply([2]); // 1
  await s.apply([8]); // 2
  await s.flip(2);
  // The verify re-read block 2: the table now records the damaged data (ReplicaHashes.reread), and the
  // block is pending until something rewrites it.
  s.hashes.set(leafHashes(await s.replica.read(2 * BS, BS), BS), 2);
  await s.retention.markDamaged([2], s.doneSeq(), { pending: [2] }, 'verify');
  await s.apply([11]); // 3: the replica still holds the damage
  await s.apply([2]); // 4: the repair
  await s.apply([12]); // 5
  const listed = await s.listedRecoverExactly(t);
  t.same(listed, [0, 4, 5], 'points 1 to 3 read the damaged block; 4 and 5 hold the repaired one');
  t.same(s.retention.stats.damagedPoints, [[1, 3]]);
});

t.test('no damage: nothing is withdrawn', async (t) => {
  const s = await setup(t);
  for (let i = 0; i < 6; i++) await s.apply([i, i + 10]);
  const listed = await s.listedRecoverExactly(t);
  t.same(listed, [0, 1, 2, 3, 4, 5, 6]);
  t.same(s.retention.stats.damagedPoints, []);
});
