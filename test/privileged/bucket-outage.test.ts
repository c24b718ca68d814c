// The object store stopped in the middle of an upload and started again, against a real store (OpenStack
// Swift's S3 API on loopback). A real replica (32 MiB of random data) with a real retention log whose own
// policy would drop every point but the newest; the bucket tier runs in the background. Swift is stopped
// while the first full image (a multipart upload) is going up; differentials go on being applied; local
// maintenance runs. Meanwhile: the tier reports TM_ERR_BUCKET_UNAVAILABLE, backs off, and shows its backlog
// and its age in status, and local retention deletes nothing the bucket does not hold yet. Swift restarted,
// the tier catches up by itself: every point is listed once, the segments run unbroken with no range twice,
// no object is left that the manifest does not list (the torn image's key was recorded and is deleted),
// points rebuilt from the bucket equal the replica as it was, and only now may local retention thin.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { silentLogger } from '../../common/log.js';
import type { RecoveryPoint } from '../../master-target/volume-state.js';
import { bucketPoints, listedKeys, manifestKey } from '../../master-target/bucket/manifest.js';
import { readManifest, recoverFromBucket } from '../../master-target/bucket/recover.js';
import { BucketStore } from '../../master-target/bucket/store.js';
import { BucketTier, type TierSource } from '../../master-target/bucket/tier.js';
import { Replica } from '../../master-target/replica.js';
import { RetentionLog } from '../../master-target/retention/retention-log.js';
import { waitFor } from '../integration/helpers.js';
import { Rng } from '../seed.js';
import { SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY, swiftAvailable, SwiftStore } from '../swift-harness.js';
import { privileged, tempDir } from './require-root.js';

const BS = 4096;
const SIZE = 32 << 20;
const log = silentLogger();
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('the store stopped mid-upload and restarted: nothing lost, nothing listed twice, local history held', async (t) => {
  if (!privileged(t, ['swift-proxy-server', 'swift-object-server']) || !swiftAvailable()) return;
  const dir = tempDir(t);
  const swift = await SwiftStore.start(path.join(dir, 'swift'));
  t.teardown(() => swift.destroy());
  const creds = { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY };
  const s3 = new S3Client({ endpoint: swift.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds });
  t.teardown(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: 'tm-outage' }));

  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, randomBytes(SIZE));
  const replica = await Replica.open(replicaPath, SIZE);
  t.teardown(() => replica.close());
  // Local retention alone would keep only the newest point: everything older is past its 1 ms window.
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy: { windowMs: 1, appWindowMs: 0, tiers: [], pinTags: [] }, maxBytes: 1, onFull: 'purge' }, log);
  await retention.open();
  let doneSeq = 0;
  const points: RecoveryPoint[] = [];
  const states = new Map<number, string>();
  const rng = new Rng('bucket-outage');
  const apply = async (): Promise<void> => {
    const seq = doneSeq + 1;
    const tip: RecoveryPoint = { seq, atMs: Date.now(), appliedAt: Date.now(), consistency: 'CRASH', tags: [] };
    const block = rng.int(0, SIZE / BS - 64);
    const extents = [{ offset: block * BS, length: rng.int(1, 64) * BS }];
    await retention.beforeApply(seq, extents, replica, points.at(-1) ?? null, tip);
    await replica.write(extents[0]!.offset, randomBytes(extents[0]!.length));
    doneSeq = seq;
    points.push(tip);
    states.set(seq, sha(await replica.read(0, SIZE)));
  };
  const maintain = (): Promise<void> => retention.maintain(Date.now() + 3_600_000, doneSeq, points.at(-1) ?? null);

  const store = new BucketStore({ endpoint: swift.endpoint, region: 'us-east-1', bucket: 'tm-outage', prefix: 'p', credentials: creds, partSizeBytes: 5 << 20, concurrency: 2 });
  const src: TierSource = { volumeId: 'v', replicaPath, sizeBytes: SIZE, blockSize: BS, retention, doneSeq: () => doneSeq, settledSeq: async () => doneSeq };
  const tier = new BucketTier(src, store, { imageIntervalMs: 0, fullEvery: 1000, pollIntervalMs: 100 }, path.join(dir, 'mt'), log);
  retention.holdAfter(() => tier.keepAfter());
  t.teardown(() => tier.close());

  for (let i = 0; i < 3; i++) await apply();
  await tier.open();
  // The first pass uploads the segments, then reads the replica into a full image and uploads it (7 parts).
  const uploadBegins = Date.now() + 60_000;
  while (tier.stats.phase !== 'image: upload') {
    if (Date.now() > uploadBegins) throw new Error('the full image upload did not begin within 60 s');
    await new Promise((r) => setTimeout(r, 2));
  }
  // The proxy first: clients meet a closed port (a proxy whose back ends stop first answers 404s).
  await swift.stop(['proxy']);
  await swift.stop();
  t.comment(`swift stopped during phase "${tier.stats.phase}"`);
  await waitFor(async () => tier.stats.lastErrorCode !== null, 60_000, 'the tier notices the outage');
  t.equal(tier.stats.lastErrorCode, 'TM_ERR_BUCKET_UNAVAILABLE', 'an unreachable store: TM_ERR_BUCKET_UNAVAILABLE');
  t.match(String(tier.stats.lastError), /images\//, 'the failed request was the image upload (the store stopped mid-upload)');
  const heldFrom = tier.keepAfter();

  // The outage goes on: differentials are applied, local maintenance runs.
  for (let i = 0; i < 8; i++) {
    await apply();
    await maintain();
    await new Promise((r) => setTimeout(r, 150));
  }
  const covered = (from: number, to: number): boolean => {
    let next = from;
    for (const s of retention.segments) if (s.fromSeq <= next && s.toSeq >= next) next = s.toSeq + 1;
    return next > to;
  };
  t.ok(covered(heldFrom + 1, doneSeq), `local retention still holds every segment after #${heldFrom} (through #${doneSeq}) that the bucket does not`);
  const st = tier.status();
  t.equal(st.phase, 'backoff', 'status: the tier is backing off');
  t.ok(st.backlogSegments >= 8, `status: backlog of ${st.backlogSegments} segments`);
  t.ok(st.backlogBytes > 0, `status: backlog of ${st.backlogBytes} bytes`);
  t.ok(st.backlogAgeMs >= 1000, `status: the oldest waiting segment is ${st.backlogAgeMs} ms old`);
  t.equal(st.imageSeq, 0, 'no image is listed: the torn upload is not a point');

  await swift.startServers();
  await waitFor(async () => {
    const s = tier.status();
    return s.lastError === null && s.backlogSegments === 0 && s.imageSeq === doneSeq && s.phase === 'idle';
  }, 180_000, 'the tier catches up after the outage');

  const m = await readManifest(store, 'v');
  const keys = m.segments.map((s) => s.key);
  t.equal(new Set(keys).size, keys.length, 'no segment is listed twice');
  const ranges = [...m.segments].sort((a, b) => a.fromSeq - b.fromSeq).map((s) => [s.fromSeq, s.toSeq]);
  t.same(ranges, Array.from({ length: doneSeq }, (_, i) => [i + 1, i + 1]), 'one segment per differential, unbroken, none missing');
  t.equal(new Set(m.images.map((i) => i.id)).size, m.images.length, 'no image is listed twice');
  t.same(bucketPoints(m).map((p) => p.seq), points.map((p) => p.seq), 'every point is in the bucket, once');
  t.same(m.pendingDeletes ?? [], [], 'nothing is pending');
  const present = new Set<string>();
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: 'tm-outage', Prefix: 'p/', ContinuationToken: token }));
    for (const o of r.Contents ?? []) present.add(o.Key!.slice(2));
    token = r.NextContinuationToken;
  } while (token);
  t.same([...present].sort(), [...listedKeys(m), manifestKey('v')].sort(), 'the bucket holds exactly the manifest and what it lists');

  for (const seq of [1, 3, 4, 7, doneSeq]) {
    const out = path.join(dir, `p${seq}.img`);
    await recoverFromBucket(store, 'v', { seq }, out, { force: true });
    t.equal(sha(await fsp.readFile(out)), states.get(seq), `point #${seq} rebuilt from the bucket equals the replica as it was`);
    await fsp.rm(out);
  }
  // Confirmed in the bucket: local retention may now apply its own policy.
  const before = retention.segments.length;
  await maintain();
  t.ok(retention.segments.length < before, `local retention thins once the bucket holds the history (${before} → ${retention.segments.length} segments)`);
});
