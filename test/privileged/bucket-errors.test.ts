// The bucket tier's failures against a real object store (OpenStack Swift's S3 API on loopback), each with
// its code, from the tier (a pass, and the background loop's status) and from `tidemark points --from`:
// a wrong secret and an unknown access key (TM_ERR_BUCKET_AUTH, the secret never in the message), a missing
// bucket (TM_ERR_BUCKET_MISSING), a store nothing answers at (TM_ERR_BUCKET_UNAVAILABLE), a damaged manifest
// (TM_ERR_BUCKET_CORRUPT), one from a newer Tidemark (TM_ERR_BUCKET_VERSION), a listed segment deleted
// behind the tier's back (TM_ERR_BUCKET_CORRUPT at recovery), and no credentials at all
// (TM_ERR_CONFIG_INVALID).
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { CreateBucketCommand, DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, TIDEMARK_BIN } from '../../lab/lab.js';
import { silentLogger } from '../../common/log.js';
import { loadCredentials } from '../../master-target/bucket/credentials.js';
import { emptyManifest, encodeManifest, manifestKey } from '../../master-target/bucket/manifest.js';
import { readManifest, recoverFromBucket } from '../../master-target/bucket/recover.js';
import { BucketStore, type StoreCredentials } from '../../master-target/bucket/store.js';
import { BucketTier, type TierSource } from '../../master-target/bucket/tier.js';
import { Replica } from '../../master-target/replica.js';
import { RetentionLog } from '../../master-target/retention/retention-log.js';
import type { RecoveryPoint } from '../../master-target/volume-state.js';
import { waitFor } from '../integration/helpers.js';
import { SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY, swiftAvailable, SwiftStore } from '../swift-harness.js';
import { privileged, tempDir } from './require-root.js';

const execFileP = promisify(execFile);
const BS = 4096;
const SIZE = 64 * BS;
const log = silentLogger();
const GOOD: StoreCredentials = { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY };

async function tm(args: string[]): Promise<{ ok: boolean; code: number; out: string }> {
  return execFileP(process.execPath, [TIDEMARK_BIN, ...args], { timeout: 120_000 })
    .then((r) => ({ ok: true, code: 0, out: r.stdout }), (e: { code?: number; stdout?: string; stderr?: string }) => ({ ok: false, code: Number(e.code), out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
}

t.test('each failure of the store has its own clear code', async (t) => {
  if (!privileged(t, ['swift-proxy-server', 'swift-object-server']) || !swiftAvailable()) return;
  const dir = tempDir(t);
  const swift = await SwiftStore.start(path.join(dir, 'swift'));
  t.teardown(() => swift.destroy());
  const s3 = new S3Client({ endpoint: swift.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: GOOD });
  t.teardown(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: 'tm-errors' }));
  const open: BucketStore[] = [];
  t.teardown(() => open.forEach((s) => s.close()));
  const storeAt = (o: { endpoint?: string; bucket?: string; credentials?: StoreCredentials } = {}): BucketStore => {
    const s = new BucketStore({ endpoint: o.endpoint ?? swift.endpoint, region: 'us-east-1', bucket: o.bucket ?? 'tm-errors', prefix: 'p', credentials: o.credentials ?? GOOD, partSizeBytes: 5 << 20, concurrency: 2 });
    open.push(s);
    return s;
  };

  // A small real history: a replica, its retention log, three differentials.
  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, Buffer.alloc(SIZE, 7));
  const replica = await Replica.open(replicaPath, SIZE);
  t.teardown(() => replica.close());
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy: { windowMs: 1e13, appWindowMs: 1e13, tiers: [], pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  let doneSeq = 0;
  let prev: RecoveryPoint | null = null;
  for (let seq = 1; seq <= 3; seq++) {
    const tip: RecoveryPoint = { seq, atMs: Date.now(), appliedAt: Date.now(), consistency: 'CRASH', tags: [] };
    await retention.beforeApply(seq, [{ offset: seq * 4 * BS, length: 2 * BS }], replica, prev, tip);
    await replica.write(seq * 4 * BS, Buffer.alloc(2 * BS, seq));
    doneSeq = seq;
    prev = tip;
  }
  const src: TierSource = { volumeId: 'v', replicaPath, sizeBytes: SIZE, blockSize: BS, retention, doneSeq: () => doneSeq, settledSeq: async () => doneSeq };
  const stateDir = path.join(dir, 'mt');
  await fsp.mkdir(path.join(stateDir, 'bucket-tier'), { recursive: true });
  const tierOn = (store: BucketStore): BucketTier => new BucketTier(src, store, { imageIntervalMs: 0, fullEvery: 3, pollIntervalMs: 200 }, stateDir, log);
  const refused = async (t: Test, store: BucketStore, code: string, what: string): Promise<void> => {
    const tier = tierOn(store);
    const err = await tier.pass().then(() => null, (e: Error & { code?: string }) => e);
    t.equal(err?.code, code, `${what}: a pass fails with ${code}`);
    t.notMatch(String(err?.message), new RegExp(SWIFT_SECRET_KEY + '|wrong-secret'), `${what}: the message holds no secret`);
    // The background loop: the same code in status, backing off.
    const bg = tierOn(store);
    await bg.open();
    await waitFor(async () => bg.status().lastErrorCode !== null, 30_000, `${what}: the tier reports its error`);
    const st = bg.status();
    t.equal(st.lastErrorCode, code, `${what}: status lastErrorCode ${code}`);
    t.equal(st.phase, 'backoff', `${what}: the tier backs off`);
    t.notMatch(JSON.stringify(st), new RegExp(`${SWIFT_SECRET_KEY}|wrong-secret`), `${what}: status holds no secret`);
    await bg.close();
  };

  await t.test('wrong secret', (t) => refused(t, storeAt({ credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: 'wrong-secret' } }), 'TM_ERR_BUCKET_AUTH', 'a wrong secret'));
  await t.test('unknown access key', (t) => refused(t, storeAt({ credentials: { accessKeyId: 'nobody:ghost', secretAccessKey: 'wrong-secret' } }), 'TM_ERR_BUCKET_AUTH', 'an unknown access key'));
  await t.test('missing bucket', (t) => refused(t, storeAt({ bucket: 'no-such-bucket' }), 'TM_ERR_BUCKET_MISSING', 'a missing bucket'));
  const deadPort = await freePort();
  await t.test('nothing listening', (t) => refused(t, storeAt({ endpoint: `http://127.0.0.1:${deadPort}` }), 'TM_ERR_BUCKET_UNAVAILABLE', 'an unreachable store'));

  await t.test('the CLI: codes, a failing exit, nothing written', async (t) => {
    const creds = path.join(dir, 'creds.json');
    await fsp.writeFile(creds, JSON.stringify(GOOD), { mode: 0o600 });
    const unreachable = await tm(['points', 'v', '--from', 's3://tm-errors/p', '--endpoint', `http://127.0.0.1:${deadPort}`, '--credentials', creds]);
    t.notOk(unreachable.ok, 'points --from an unreachable store fails');
    t.match(unreachable.out, /TM_ERR_BUCKET_UNAVAILABLE/, 'with TM_ERR_BUCKET_UNAVAILABLE');
    const out = path.join(dir, 'never.img');
    const bad = path.join(dir, 'bad.json');
    await fsp.writeFile(bad, JSON.stringify({ accessKeyId: 'nobody:ghost', secretAccessKey: 'wrong-secret' }));
    const unknown = await tm(['recover', 'v', '--from', 's3://tm-errors/p', '--endpoint', swift.endpoint, '--credentials', bad, '--latest', '--out', out]);
    t.match(unknown.out, /TM_ERR_BUCKET_AUTH/, 'an unknown access key: TM_ERR_BUCKET_AUTH');
    t.notMatch(unknown.out, /wrong-secret/, 'the secret is not echoed');
    const noCreds = await tm(['points', 'v', '--from', 's3://tm-errors/p', '--endpoint', swift.endpoint, '--credentials', path.join(dir, 'absent.json')]);
    t.match(noCreds.out, /TM_ERR_CONFIG_INVALID/, 'a credentials file that does not exist: TM_ERR_CONFIG_INVALID');
    t.notOk(await fsp.stat(out).then(() => true, () => false), 'nothing was written');
  });

  await t.test('no credentials at all', async (t) => {
    t.throws(() => loadCredentials(undefined, {}), { code: 'TM_ERR_CONFIG_INVALID' }, 'no file and no environment: TM_ERR_CONFIG_INVALID');
    t.same(loadCredentials(undefined, { TIDEMARK_S3_ACCESS_KEY_ID: 'a', TIDEMARK_S3_SECRET_ACCESS_KEY: 'b' }), { accessKeyId: 'a', secretAccessKey: 'b' }, 'the environment is read');
  });

  await t.test('damaged and newer manifests; a listed object deleted behind the tier', async (t) => {
    const good = storeAt();
    const tier = tierOn(good);
    await tier.pass();
    await tier.close();
    const m = await readManifest(storeAt(), 'v');
    t.ok(m.images.length === 1 && m.segments.length === 3, 'the tier uploaded a history');
    // A listed segment deleted by someone else: recovering a point that needs it is refused, nothing left.
    // Point #1 is rebuilt from the image at #3 rolled back with segments 2 and 3.
    await s3.send(new DeleteObjectCommand({ Bucket: 'tm-errors', Key: `p/${m.segments.find((s) => s.fromSeq === 2)!.key}` }));
    const out = path.join(dir, 'p1.img');
    await t.rejects(recoverFromBucket(storeAt(), 'v', { seq: 1 }, out), { code: 'TM_ERR_BUCKET_CORRUPT' }, 'a missing listed segment: TM_ERR_BUCKET_CORRUPT');
    t.notOk(await fsp.stat(out).then(() => true, () => false), 'no partial output left');
    // Image ranges come through the lean reader (ranged-get.ts), which hands anything unclean to the SDK:
    // it returns exactly the bytes asked for; a damaged image chunk and a deleted image are refused.
    const img = m.images.at(-1)!;
    const whole = (await storeAt().get(img.key))!;
    const lean = (await storeAt().getStream(img.key, { start: 5, end: whole.length - 3 }))!;
    const pieces: Buffer[] = [];
    for await (const piece of lean) pieces.push(Buffer.from(piece));
    t.ok(lean.release, 'plain http: the lean reader served the range');
    lean.release?.();
    t.ok(Buffer.concat(pieces).equals(whole.subarray(5, whole.length - 3)), 'a ranged GET returns exactly the bytes asked for');
    const flipped = Buffer.from(whole);
    flipped[whole.length >> 1]! ^= 0xff; // inside the chunk's data
    await storeAt().putBuffer(img.key, flipped);
    await t.rejects(recoverFromBucket(storeAt(), 'v', { seq: 3 }, out), { code: 'TM_ERR_BUCKET_CORRUPT' }, 'a damaged image chunk: TM_ERR_BUCKET_CORRUPT');
    t.notOk(await fsp.stat(out).then(() => true, () => false), 'no partial output left');
    await storeAt().delete(img.key);
    await t.rejects(recoverFromBucket(storeAt(), 'v', { seq: 3 }, out), { code: 'TM_ERR_BUCKET_CORRUPT' }, 'a deleted image: TM_ERR_BUCKET_CORRUPT');
    const counted = storeAt();
    t.equal(await counted.getStream(img.key, { start: 0, end: 10 }), null, 'a deleted object reads as absent');
    t.equal(counted.requests.get, 2, 'both GETs are counted: the lean one, and the one the SDK asked again');
    await storeAt().putBuffer(img.key, whole);
    const key = manifestKey('v');
    const damaged = encodeManifest(m);
    damaged[damaged.length - 10]! ^= 0xff;
    await storeAt().putBuffer(key, damaged);
    const e1 = await tierOn(storeAt()).pass().then(() => null, (e: { code?: string }) => e);
    t.equal(e1?.code, 'TM_ERR_BUCKET_CORRUPT', 'a damaged manifest: the tier stops with TM_ERR_BUCKET_CORRUPT (and overwrites nothing)');
    t.ok((await storeAt().get(key))!.equals(damaged), 'the damaged manifest is left for the operator');
    const newer = encodeManifest(emptyManifest('v', SIZE, BS));
    newer.writeUInt16LE(9, 4);
    await storeAt().putBuffer(key, newer);
    const e2 = await tierOn(storeAt()).pass().then(() => null, (e: { code?: string }) => e);
    t.equal(e2?.code, 'TM_ERR_BUCKET_VERSION', 'a manifest from a newer Tidemark: TM_ERR_BUCKET_VERSION');
    const creds = path.join(dir, 'creds.json');
    const listed = await tm(['points', 'v', '--from', 's3://tm-errors/p', '--endpoint', swift.endpoint, '--credentials', creds]);
    t.match(listed.out, /TM_ERR_BUCKET_VERSION/, 'points --from says so too');
  });
});
