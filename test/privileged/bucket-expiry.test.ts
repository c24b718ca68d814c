// Long-term retention in the bucket against a real object store (OpenStack Swift's S3 API on loopback).
// A real replica with a real retention log takes 48 differentials, one recovery point an hour of (made-up)
// apply time; a real bucket tier uploads their segments and full and incremental images. Then expiry runs
// four times with ever stricter policies (tiers, an age limit, a pinned tag, a space limit), and each time
// a failure is injected at another step of it (the manifest written with its intent, the merged segments
// uploaded, the new manifest written, the first object deleted), as a crash there would. After each
// crash, the manifest in the bucket must list only objects that exist and every object under the prefix
// must be listed or pending deletion; a restarted tier must finish the job: the bucket then holds exactly
// the manifest and what it lists (nothing leaked), the points the policy keeps and no other, and every one
// of them rebuilds from the bucket equal to the replica as it was at that point, byte for byte.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { silentLogger } from '../../common/log.js';
import type { RecoveryPoint } from '../../master-target/volume-state.js';
import { asThinning, type BucketRetention, type ExpiryStage } from '../../master-target/bucket/expiry.js';
import { bucketPoints, listedKeys, manifestKey } from '../../master-target/bucket/manifest.js';
import { readManifest, recoverFromBucket } from '../../master-target/bucket/recover.js';
import { BucketStore } from '../../master-target/bucket/store.js';
import { BucketTier, type TierSource } from '../../master-target/bucket/tier.js';
import { Replica } from '../../master-target/replica.js';
import { RetentionLog } from '../../master-target/retention/retention-log.js';
import { Rng } from '../seed.js';
import { SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY, swiftAvailable, SwiftStore } from '../swift-harness.js';
import { privileged, tempDir } from './require-root.js';

const BS = 4096;
const BLOCKS = 256;
const SIZE = BS * BLOCKS;
const DIFFS = 48;
const HOUR = 3_600_000;
const log = silentLogger();

t.test('expiry by tiers in the bucket: crash-safe at every step, nothing leaked, kept points exact', async (t) => {
  if (!privileged(t, ['swift-proxy-server', 'swift-object-server']) || !swiftAvailable()) return;
  const dir = tempDir(t);
  const swift = await SwiftStore.start(path.join(dir, 'swift'));
  t.teardown(() => swift.destroy());
  const s3 = new S3Client({ endpoint: swift.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY } });
  t.teardown(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: 'tm-expiry' }));
  const newStore = (): BucketStore => new BucketStore({ endpoint: swift.endpoint, region: 'us-east-1', bucket: 'tm-expiry', prefix: 'site', credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY }, partSizeBytes: 5 << 20, concurrency: 4 });

  // The replica and its local retention (keeps everything), as the applier drives them.
  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, Buffer.alloc(SIZE, 0x11));
  const replica = await Replica.open(replicaPath, SIZE);
  t.teardown(() => replica.close());
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy: { windowMs: 1e13, appWindowMs: 1e13, tiers: [], pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  let doneSeq = 0;
  const src: TierSource = { volumeId: 'v', replicaPath, sizeBytes: SIZE, blockSize: BS, retention, doneSeq: () => doneSeq, settledSeq: async () => doneSeq };
  const stateDir = path.join(dir, 'mt');
  await fsp.mkdir(stateDir);
  const tierWith = async (retentionPolicy: BucketRetention | null, hook?: (s: ExpiryStage) => void): Promise<BucketTier> => {
    const tier = new BucketTier(src, newStore(), { imageIntervalMs: 0, fullEvery: 3, pollIntervalMs: 3_600_000, retention: retentionPolicy, expiryHook: hook }, stateDir, log);
    await fsp.mkdir(path.join(stateDir, 'bucket-tier'), { recursive: true });
    return tier;
  };

  // 48 differentials, the points an hour apart in apply time, the newest now; #2 carries a pinned tag.
  const rng = new Rng('bucket-expiry');
  const t0 = Date.now();
  const states = new Map<number, Buffer>();
  const points: RecoveryPoint[] = [];
  const uploader = await tierWith(null);
  for (let seq = 1; seq <= DIFFS; seq++) {
    const tip: RecoveryPoint = { seq, atMs: t0 - (DIFFS - seq) * HOUR, appliedAt: t0 - (DIFFS - seq) * HOUR, consistency: 'CRASH', tags: seq === 2 ? ['golden'] : [] };
    const extents = Array.from({ length: rng.int(1, 5) }, () => {
      const block = rng.int(0, BLOCKS);
      return { offset: block * BS, length: Math.min(rng.int(1, 25), BLOCKS - block) * BS };
    }).sort((a, b) => a.offset - b.offset).filter((e, i, all) => i === 0 || e.offset >= all[i - 1]!.offset + all[i - 1]!.length);
    await retention.beforeApply(seq, extents, replica, points.at(-1) ?? null, tip);
    for (const e of extents) await replica.write(e.offset, Buffer.from(Array.from({ length: e.length }, () => rng.int(0, 256))));
    doneSeq = seq;
    states.set(seq, await replica.read(0, SIZE));
    points.push(tip);
    if (seq % 6 === 0 || seq === DIFFS) await uploader.pass(); // an image every 6 points: full, incr, incr, full...
  }
  await uploader.close();

  const allKeys = async (): Promise<Set<string>> => {
    const keys = new Set<string>();
    let token: string | undefined;
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: 'tm-expiry', Prefix: 'site/', ContinuationToken: token }));
      for (const o of r.Contents ?? []) keys.add(o.Key!.slice('site/'.length));
      token = r.NextContinuationToken;
    } while (token);
    return keys;
  };
  const store = newStore();
  t.teardown(() => store.close());
  const check = async (t: Test, what: string, exact: boolean): Promise<number[]> => {
    const m = await readManifest(store, 'v');
    const listed = listedKeys(m);
    const present = await allKeys();
    const missing = [...listed].filter((k) => !present.has(k));
    t.same(missing, [], `${what}: every object the manifest lists exists`);
    const unlisted = [...present].filter((k) => !listed.has(k) && k !== manifestKey('v'));
    if (exact) t.same(unlisted, [], `${what}: nothing else is left in the bucket`);
    else t.same(unlisted.filter((k) => !(m.pendingDeletes ?? []).includes(k)), [], `${what}: every unlisted object is pending deletion (${unlisted.length})`);
    return bucketPoints(m).map((p) => p.seq);
  };
  const rebuild = async (t: Test, seqs: number[]): Promise<void> => {
    let exact = 0;
    for (const seq of seqs) {
      const out = path.join(dir, `p${seq}.img`);
      await recoverFromBucket(store, 'v', { seq }, out, { force: true });
      if ((await fsp.readFile(out)).equals(states.get(seq)!)) exact++;
      else t.fail(`point #${seq} rebuilt from the bucket differs from the replica at #${seq}`);
      await fsp.rm(out);
    }
    t.equal(exact, seqs.length, `all ${seqs.length} points rebuilt from the bucket equal the replica as it was`);
  };

  const before = await check(t, 'before expiry', true);
  t.same(before, points.map((p) => p.seq), 'every point is in the bucket before expiry');
  const bytesBefore = (await readManifest(store, 'v')).segments.reduce((n, s) => n + s.bytes, 0);

  const d = (h: number): number => h * HOUR;
  const runs: Array<{ stage: ExpiryStage; policy: BucketRetention }> = [
    // Every point for 12 h, then one per 4 h.
    { stage: 'intent', policy: { keepAllMs: d(12), tiers: [{ everyMs: d(4), forMs: d(1000) }], maxAgeMs: d(1000), maxBytes: null, pinTags: ['golden'], intervalMs: 0 } },
    // Every point for 6 h, one per 8 h until 30 h; older goes but the pinned #2.
    { stage: 'uploaded', policy: { keepAllMs: d(6), tiers: [{ everyMs: d(8), forMs: d(30) }], maxAgeMs: d(30), maxBytes: null, pinTags: ['golden'], intervalMs: 0 } },
    // The pin lifted: #2 is past the age limit and goes.
    { stage: 'committed', policy: { keepAllMs: d(6), tiers: [{ everyMs: d(8), forMs: d(30) }], maxAgeMs: d(30), maxBytes: null, pinTags: [], intervalMs: 0 } },
    // A space limit: the oldest go until the listed bytes fit.
    { stage: 'deleted-one', policy: { keepAllMs: d(6), tiers: [{ everyMs: d(8), forMs: d(30) }], maxAgeMs: d(30), maxBytes: 0, pinTags: [], intervalMs: 0 } },
  ];
  let previous = before;
  for (const { stage, policy } of runs) {
    await t.test(`expiry interrupted after "${stage}", then resumed`, async (t) => {
      if (stage === 'deleted-one') policy.maxBytes = Math.floor((await readManifest(store, 'v')).images.reduce((n, i) => n + i.bytes, 0) * 1.05 + (await readManifest(store, 'v')).segments.reduce((n, s) => n + s.bytes, 0) * 0.5);
      const crashing = await tierWith(policy, (s) => { if (s === stage) throw new Error(`injected crash after ${s}`); });
      await t.rejects(crashing.pass(), /injected crash/, 'the pass fails where the failure was injected');
      await crashing.close();
      const mid = await check(t, `after the crash at "${stage}"`, false);
      await rebuild(t, mid.filter((_, i) => i % 5 === 0 || i === mid.length - 1));

      const resumed = await tierWith(policy);
      await resumed.pass();
      const st = resumed.status();
      await resumed.close();
      t.equal(st.lastError, null, 'the resumed tier reports no error');
      t.equal(st.expiry.pendingDeletes, 0, 'nothing is left pending');
      const after = await check(t, `resumed after "${stage}"`, true);
      const now = Date.now();
      const keepAll = previous.filter((s) => now - points[s - 1]!.appliedAt <= policy.keepAllMs);
      t.same(keepAll.filter((s) => !after.includes(s)), [], 'every point younger than keepAll is kept');
      t.ok(after.includes(DIFFS), 'the newest point is kept');
      for (const s of after) t.ok(previous.includes(s), `#${s} was listed before (no point comes back)`);
      const old = after.filter((s) => now - points[s - 1]!.appliedAt > policy.maxAgeMs && s !== DIFFS);
      t.same(old.filter((s) => !policy.pinTags.some((tag) => points[s - 1]!.tags.includes(tag))), [], 'no unpinned point older than maxAge is left');
      if (policy.pinTags.includes('golden')) t.ok(after.includes(2), 'the pinned point #2 is kept whatever its age');
      // Past keepAll, at most one point per tier interval (epoch-aligned, as the policy says).
      const thin = asThinning(policy);
      const taken = new Set<string>();
      for (const s of after) {
        const age = now - points[s - 1]!.appliedAt;
        if (age <= policy.keepAllMs || s === DIFFS || points[s - 1]!.tags.some((tag) => policy.pinTags.includes(tag))) continue;
        const tier = thin.tiers.findIndex((x, i) => age > x.afterMs && (i === thin.tiers.length - 1 || age <= thin.tiers[i + 1]!.afterMs));
        const key = `${tier}:${Math.floor(points[s - 1]!.appliedAt / thin.tiers[tier]!.everyMs)}`;
        t.notOk(taken.has(key), `#${s}: one point per tier interval`);
        taken.add(key);
      }
      t.ok(after.length < previous.length, `points expired: ${previous.length} → ${after.length}`);
      if (policy.maxBytes !== null) t.ok(st.expiry.listedBytes <= policy.maxBytes || st.expiry.overLimit, `listed bytes ${st.expiry.listedBytes} within maxBytes ${policy.maxBytes}`);
      await rebuild(t, after);
      for (const gone of previous.filter((s) => !after.includes(s)).slice(0, 3)) {
        await t.rejects(recoverFromBucket(store, 'v', { seq: gone }, path.join(dir, 'gone.img')), { code: 'TM_ERR_POINT_NOT_FOUND' }, `expired #${gone} is refused`);
      }
      previous = after;
    });
  }
  const m = await readManifest(store, 'v');
  const bytesAfter = m.segments.reduce((n, s) => n + s.bytes, 0);
  t.ok(bytesAfter < bytesBefore, `segment bytes in the bucket: ${bytesBefore} → ${bytesAfter}`);
  t.equal(m.version, 2, 'the manifest records expiry state as format version 2');
});
