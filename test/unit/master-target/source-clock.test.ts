// Recovery points must not follow the source's clock (issue 11 item 3): capture times are made
// non-decreasing per volume at apply, `--at` selects in sequence order, and retention ages points by the
// master target's own apply time.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { crc } from '../../../common/checksum.js';
import { silentLogger } from '../../../common/log.js';
import { Applier } from '../../../master-target/applier.js';
import { selectPoint } from '../../../master-target/recover.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';
import { pointsToKeep, type RetentionPolicy } from '../../../master-target/retention/policy.js';
import { DiffStore } from '../../../proto/diff-store.js';
import { type RecoveryPoint, type MtVolumeState } from '../../../master-target/volume-state.js';
import { HrlWriter } from '../../../proto/hrl.js';

const H = 3_600_000;

t.test('a source clock stepped back: the later point keeps a later capture time, with a warning', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-clock-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const size = 1 << 20;
  const store = new DiffStore<MtVolumeState>(path.join(dir, 'store'), 'v', silentLogger());
  await store.open();
  await store.adopt({ volumeId: 'v', sizeBytes: size, blockSize: 4096, replicationId: 'r' }, { resyncing: false });
  await fsp.writeFile(path.join(dir, 'replica.img'), Buffer.alloc(size));
  const replica = await Replica.open(path.join(dir, 'replica.img'), size);
  t.teardown(() => replica.close());
  const hashes = new ReplicaHashes(store.dir, size, 4096, silentLogger());
  await hashes.initZero();
  const incident = Date.now();
  const datas: Buffer[] = [];
  // seq 1 captured at the incident; seq 2 after it, but the source clock was stepped back an hour.
  for (const [seq, end] of [[1, incident], [2, incident - H]] as const) {
    const w = await HrlWriter.create(store.dir, { volumeId: 'v', seq, startTimeMs: end - 10, endTimeMs: end, volumeSize: size, blockSize: 4096, consistency: 'CRASH', flags: 0, tags: [] });
    const data = randomBytes(4096);
    datas.push(data);
    await w.append({ offset: seq * 4096, length: 4096, crc32c: crc(data), compression: 'NONE', storedLength: 4096 }, data);
    await w.commit();
    await store.added(seq);
  }
  const warnings: unknown[] = [];
  const log = silentLogger();
  const spyLog = Object.assign(Object.create(log) as typeof log, { warn: (o: unknown) => { warnings.push(o); } });
  const applier = new Applier('v', store, replica, hashes, { applied: () => {}, damaged: async () => {} }, spyLog);
  await applier.kick();
  t.equal(store.doneSeq, 2, 'both applied');
  t.ok((await replica.read(2 * 4096, 4096)).equals(datas[1]!), 'with their bytes');
  t.equal(store.state!.lastCrashPoint!.atMs, incident, 'the later point is not recorded as captured before the earlier one');
  t.equal(warnings.length, 1, 'and a warning says so');
  t.throws(() => selectPoint([{ seq: 1, atMs: incident, consistency: 'CRASH', tags: [], appliedAt: 0 }, store.state!.lastCrashPoint!], { atMs: incident - 1 }, 'v'), { code: 'TM_ERR_POINT_NOT_FOUND' }, 'so nothing before the incident is offered');
});

t.test('--at selects in sequence order: a later point with an earlier time is not taken', async (t) => {
  const p = (seq: number, atMs: number): RecoveryPoint => ({ seq, atMs, consistency: 'CRASH', tags: [], appliedAt: seq });
  // Written before the master target made times monotonic: #3 was captured after the incident at 15.
  const pts = [p(1, 10), p(2, 20), p(3, 5), p(4, 30)];
  t.equal(selectPoint(pts, { atMs: 15 }, 'v').seq, 1, 'the last point before the first one captured after T');
  t.equal(selectPoint(pts, { atMs: 25 }, 'v').seq, 3);
  t.equal(selectPoint(pts, { atMs: 99 }, 'v').seq, 4);
});

t.test('retention ages points by the master target\'s apply time, not the source clock', async (t) => {
  const now = 1000 * H;
  const policy: RetentionPolicy = { windowMs: 72 * H, appWindowMs: 72 * H, tiers: [{ afterMs: H, everyMs: 60_000 }], pinTags: [] };
  // Applied over the last ten minutes, by a source whose clock is 100 hours behind (or ahead).
  for (const skew of [-100 * H, 100 * H]) {
    const pts: RecoveryPoint[] = Array.from({ length: 10 }, (_, i) => ({ seq: i + 1, atMs: now - (10 - i) * 60_000 + skew, consistency: 'CRASH', tags: [], appliedAt: now - (10 - i) * 60_000 }));
    t.equal(pointsToKeep(pts, now, policy).size, 10, `skew ${skew / H} h: every point of the last ten minutes is kept`);
  }
});
