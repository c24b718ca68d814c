// The retention log against a model: random differentials applied to a real replica file with their
// before-images kept; every point recovered (before and after thinning) must equal the replica as it was.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { silentLogger } from '../../../common/log.js';
import type { RecoveryPoint } from '../../../master-target/volume-state.js';
import { recoverPoint, selectPoint, type RecoverySource } from '../../../master-target/recover.js';
import { Replica } from '../../../master-target/replica.js';
import { parseDuration, pointsToKeep, type RetentionPolicy } from '../../../master-target/retention/policy.js';
import { RetentionLog } from '../../../master-target/retention/retention-log.js';
import { readSegment, SegmentWriter } from '../../../master-target/retention/segment.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

const BS = 512;
const BLOCKS = 48;
const SIZE = BS * BLOCKS;
const log = silentLogger();
const KEEP_ALL: RetentionPolicy = { windowMs: 1e12, appWindowMs: 1e12, tiers: [], pinTags: [] };

interface Write { block: number; blocks: number; fill: number }

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-retention-'));
  t.teardown(() => fsp.rm(d, { recursive: true, force: true }));
  return d;
}

/** A replica with a retention log, and the replica's content after every differential. */
async function replicate(dir: string, diffs: Write[][], policy = KEEP_ALL) {
  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, Buffer.alloc(SIZE, 0x11));
  const replica = await Replica.open(replicaPath, SIZE);
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  const states = new Map<number, Buffer>([[0, await replica.read(0, SIZE)]]);
  const points: RecoveryPoint[] = [{ seq: 0, atMs: 0, consistency: 'CRASH', tags: [], appliedAt: 0 }];
  let doneSeq = 0;
  for (const [i, writes] of diffs.entries()) {
    const seq = i + 1;
    // One point a second of (made-up) capture time; every fifth differential is fuzzy, not a point.
    const tip: RecoveryPoint | null = seq % 5 === 0 ? null : { seq, atMs: seq * 1000, consistency: seq % 7 === 0 ? 'APP' : 'CRASH', tags: seq % 7 === 0 ? [`t${seq}`] : [], appliedAt: 0 };
    const base = points.at(-1)!.seq === doneSeq ? points.at(-1)! : null;
    const extents = writes.map((w) => ({ offset: w.block * BS, length: Math.min(w.blocks, BLOCKS - w.block) * BS, fill: w.fill }));
    await retention.beforeApply(seq, extents, replica, base, tip);
    for (const e of extents) await replica.write(e.offset, Buffer.alloc(e.length, e.fill));
    doneSeq = seq;
    states.set(seq, await replica.read(0, SIZE));
    if (tip) points.push(tip);
  }
  const current = (): RecoveryPoint | null => (points.at(-1)!.seq === doneSeq ? points.at(-1)! : null);
  const src: RecoverySource = {
    volumeId: 'v', replicaPath, sizeBytes: SIZE, blockSize: BS, retention,
    doneSeq: () => doneSeq, currentPoint: current, hashes: () => null, hold: (fn) => fn(),
  };
  t.teardown(() => replica.close());
  return { src, retention, states, points, doneSeq, current };
}

const writeArb = fc.record({ block: fc.nat(BLOCKS - 1), blocks: fc.integer({ min: 1, max: 6 }), fill: fc.integer({ min: 0, max: 255 }) });
const diffsArb = fc.array(fc.array(writeArb, { minLength: 0, maxLength: 4 }), { minLength: 3, maxLength: 24 });

t.test('every retained point recovers to the replica as it was (copy path), before and after thinning', async (t) => {
  const dir = await tempDir(t);
  let run = 0;
  await fc.assert(fc.asyncProperty(diffsArb, fc.integer({ min: 2, max: 6 }), async (diffs, everySec) => {
    const d = path.join(dir, String(run++));
    await fsp.mkdir(d);
    const { src, retention, states, doneSeq, current } = await replicate(d, diffs);
    const check = async (seqs: number[]): Promise<void> => {
      for (const seq of seqs) {
        const out = path.join(d, `out-${seq}.img`);
        const r = await recoverPoint(src, { select: { seq }, out });
        const got = await fsp.readFile(out);
        if (!got.equals(states.get(seq)!)) throw new Error(`point ${seq} recovered wrong (${r.method}, ${r.segments} segments)`);
        await fsp.rm(out);
      }
    };
    await check(retention.points(doneSeq, current()).map((p) => p.seq));
    // Thin: past 0 ms keep one point per `everySec` seconds (app points kept), then recover what is left.
    retention.opts.policy.tiers = [{ afterMs: 0, everyMs: everySec * 1000 }];
    retention.opts.policy.appWindowMs = 1e12;
    const before = retention.points(doneSeq, current()).map((p) => p.seq);
    await retention.maintain(1e9, doneSeq, current());
    const after = retention.points(doneSeq, current()).map((p) => p.seq);
    await check(after);
    for (const gone of before.filter((s) => !after.includes(s))) {
      const err = await recoverPoint(src, { select: { seq: gone }, out: path.join(d, 'gone.img') }).then(() => null, (e: { code?: string }) => e);
      if (err?.code !== 'TM_ERR_POINT_NOT_FOUND') throw new Error(`thinned point ${gone} was not refused: ${String(err)}`);
      if (await fsp.stat(path.join(d, 'gone.img')).then(() => true, () => false)) throw new Error('a refused recovery left output behind');
    }
    await fsp.rm(d, { recursive: true });
  }), { numRuns: 25 });
  t.pass('25 random histories: every kept point exact, every thinned point refused');
});

t.test('a crash mid-compaction leaves a usable log: the merged segment wins, the parts are removed at open', async (t) => {
  const dir = await tempDir(t);
  const diffs: Write[][] = Array.from({ length: 12 }, (_, i) => [{ block: (i * 7) % BLOCKS, blocks: 3, fill: i + 1 }, { block: 5, blocks: 1, fill: 200 + i }]);
  const { src, retention, states, doneSeq } = await replicate(dir, diffs);
  // Simulate the crash: write the merged segment of 2..6 by hand but leave its parts in place.
  const parts = retention.segments.filter((s) => s.fromSeq >= 3 && s.toSeq <= 6);
  const { oldestImages } = await import('../../../master-target/retention/merge.js');
  const w = await SegmentWriter.create(retention.dir, { volumeId: 'v', fromSeq: 3, toSeq: 6, blockSize: BS, sizeBytes: SIZE, base: parts[0]!.base, tip: parts.at(-1)!.tip, createdAt: 0 });
  for await (const img of oldestImages(parts.map((p) => p.file), BS, SIZE)) await w.add(img);
  await w.commit();
  const reopened = new RetentionLog(retention.dir, 'v', { sizeBytes: SIZE, blockSize: BS }, retention.opts, log);
  await reopened.open();
  t.equal(reopened.segments.filter((s) => s.fromSeq >= 3 && s.toSeq <= 6).length, 1, 'only the merged segment remains');
  const s2 = { ...src, retention: reopened };
  for (const seq of [2, 6, 8, doneSeq]) {
    const out = path.join(dir, `o${seq}.img`);
    await recoverPoint(s2, { select: { seq }, out });
    t.ok((await fsp.readFile(out)).equals(states.get(seq)!), `point ${seq} exact after the interrupted compaction`);
  }
  const gone = await recoverPoint(s2, { select: { seq: 4 }, out: path.join(dir, 'o4.img') }).catch((e: { code?: string }) => e.code);
  t.equal(gone, 'TM_ERR_POINT_NOT_FOUND', 'a point inside the merged range is refused');
});

t.test('a damaged segment is an error, never a wrong recovery', async (t) => {
  const dir = await tempDir(t);
  const { src, retention } = await replicate(dir, [[{ block: 1, blocks: 2, fill: 9 }], [{ block: 3, blocks: 1, fill: 8 }], [{ block: 1, blocks: 1, fill: 7 }]]);
  const seg = retention.segments.at(-1)!;
  const buf = await fsp.readFile(seg.file);
  buf[buf.length - 40] = buf[buf.length - 40]! ^ 0xff; // inside the last before-image
  await fsp.writeFile(seg.file, buf);
  const err = await recoverPoint(src, { select: { seq: 1 }, out: path.join(dir, 'o.img') }).catch((e: { code?: string }) => e.code);
  t.equal(err, 'TM_ERR_RETENTION_CORRUPT');
  t.notOk(await fsp.stat(path.join(dir, 'o.img')).then(() => true, () => false), 'no output left');
  await t.rejects((async () => { for await (const img of readSegment(seg.file)) void img; })(), { code: 'TM_ERR_RETENTION_CORRUPT' }, 'reading the segment itself fails too');
});

t.test('recover refuses bad requests clearly and writes nothing', async (t) => {
  const dir = await tempDir(t);
  const { src } = await replicate(dir, [[{ block: 0, blocks: 1, fill: 1 }], [{ block: 0, blocks: 1, fill: 2 }]]);
  const existing = path.join(dir, 'exists.img');
  await fsp.writeFile(existing, 'keep me');
  await t.rejects(recoverPoint(src, { select: { seq: 1 }, out: existing }), { code: 'TM_ERR_USAGE' });
  t.equal(await fsp.readFile(existing, 'utf8'), 'keep me', 'existing output untouched');
  await t.rejects(recoverPoint(src, { select: { seq: 1, tag: 'x' }, out: path.join(dir, 'a.img') }), { code: 'TM_ERR_USAGE' });
  await t.rejects(recoverPoint(src, { select: { tag: 'nightyl' }, out: path.join(dir, 'a.img') }), { code: 'TM_ERR_POINT_NOT_FOUND' });
  await t.rejects(recoverPoint(src, { select: { seq: 99 }, out: path.join(dir, 'a.img') }), { code: 'TM_ERR_POINT_NOT_FOUND', message: /no retained point #99/ });
});

t.test('policy: window, tiers, app window and pinned tags', async (t) => {
  const H = 3_600_000;
  const now = 100 * H;
  const p = (seq: number, ageMs: number, extra: Partial<RecoveryPoint> = {}): RecoveryPoint => ({ seq, atMs: now - ageMs, consistency: 'CRASH', tags: [], appliedAt: now - ageMs, ...extra });
  const policy: RetentionPolicy = { windowMs: 72 * H, appWindowMs: 90 * H, tiers: [{ afterMs: H, everyMs: 60_000 }, { afterMs: 24 * H, everyMs: H }], pinTags: ['golden'] };
  const pts = [
    p(1, 99 * H, { tags: ['golden'] }), // pinned, past every window
    p(2, 80 * H, { consistency: 'APP', tags: ['nightly'] }), // app, inside the app window
    p(3, 75 * H), // past the window
    p(4, 30 * H), p(5, 30 * H - 1000), // same hour bucket: the oldest stays
    p(6, 2 * H), p(7, 2 * H - 1000), // same minute bucket
    p(8, 10 * 60_000), p(9, 10 * 60_000 - 1000), // last hour: all kept
  ];
  const keep = pointsToKeep(pts, now, policy);
  t.same([...keep].sort((a, b) => a - b), [1, 2, 4, 6, 8, 9]);
  t.same([...pointsToKeep([p(3, 75 * H)], now, policy)], [3], 'the newest point is always kept');
  t.equal(parseDuration('72h'), 72 * H);
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('3 weeks'), null);
  t.throws(() => selectPoint([], { latest: true }, 'v'), { code: 'TM_ERR_POINT_NOT_FOUND' });
});

t.test('a copy-path recovery taken while differentials keep being applied is still exact', async (t) => {
  const dir = await tempDir(t);
  const size = 32 << 20;
  const bs = 4096;
  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, Buffer.alloc(size, 0x5a));
  const replica = await Replica.open(replicaPath, size);
  t.teardown(() => replica.close());
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: size, blockSize: bs }, { policy: KEEP_ALL, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  let doneSeq = 0;
  let last: RecoveryPoint = { seq: 0, atMs: 0, consistency: 'CRASH', tags: [], appliedAt: 0 };
  const apply = async (seq: number): Promise<void> => {
    const extents = Array.from({ length: 16 }, (_, i) => ({ offset: ((seq * 7919 + i * 104729) % (size / bs - 8)) * bs, length: 8 * bs }));
    const tip: RecoveryPoint = { seq, atMs: seq, consistency: 'CRASH', tags: [], appliedAt: 0 };
    await retention.beforeApply(seq, extents, replica, last.seq === doneSeq ? last : null, tip);
    for (const e of extents) await replica.write(e.offset, Buffer.alloc(e.length, seq & 0xff));
    doneSeq = seq;
    last = tip;
  };
  for (let s = 1; s <= 5; s++) await apply(s);
  const atFive = await replica.read(0, size);
  const src: RecoverySource = {
    volumeId: 'v', replicaPath, sizeBytes: size, blockSize: bs, retention,
    doneSeq: () => doneSeq, currentPoint: () => (last.seq === doneSeq ? last : null), hashes: () => null,
    hold: () => Promise.reject(new Error('a copy with verify "changed" must not hold the applier')),
  };
  // Differentials 6.. are applied while the copy runs, between its reads.
  let applying = true;
  const applier = (async () => { for (let s = 6; applying; s++) { await apply(s); await new Promise((r) => setImmediate(r)); } })();
  const out = path.join(dir, 'p5.img');
  const r = await recoverPoint(src, { select: { seq: 5 }, out, copy: true });
  applying = false;
  await applier;
  t.ok(r.fromSeq > 5, `differentials were applied during the copy (replica at #${r.fromSeq} when it ended)`);
  t.ok((await fsp.readFile(out)).equals(atFive), 'the recovered image is exactly point #5');
});
