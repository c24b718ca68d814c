// Expiry in the bucket killed for real: a child process runs the bucket tier's expiry against a real
// object store (OpenStack Swift's S3 API on loopback) and is sent SIGKILL at a random moment (seeded),
// again and again, under four ever stricter policies, until one child finishes. After every kill the
// bucket must be consistent: the manifest lists only objects that exist (no needed object was deleted),
// every other object under the prefix is pending deletion, no point the final policy keeps has gone, and
// sampled listed points rebuild from the bucket equal to the replica as it was, byte for byte. Once a
// child finishes, the bucket holds exactly the manifest and what it lists, and every kept point is exact.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { silentLogger } from '../../common/log.js';
import type { RecoveryPoint } from '../../master-target/volume-state.js';
import type { BucketRetention } from '../../master-target/bucket/expiry.js';
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
const DIFFS = 60;
const HOUR = 3_600_000;
const MAX_KILLS = 8;
const log = silentLogger();

// The child: one tier pass (whatever pendingDeletes holds, then expiry) over the bucket, its local
// retention empty (nothing to upload). It prints each expiry stage as it passes it.
const CHILD = `
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const a = JSON.parse(process.argv[1]);
const { BucketTier } = await import(a.tier);
const { BucketStore } = await import(a.store);
const { RetentionLog } = await import(a.retention);
const { silentLogger } = await import(a.log);
const log = silentLogger();
const retention = new RetentionLog(a.retentionDir, 'v', { sizeBytes: a.size, blockSize: a.bs }, { policy: { windowMs: 1e13, appWindowMs: 1e13, tiers: [], pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
await retention.open();
const store = new BucketStore(a.storeOpts);
const src = { volumeId: 'v', replicaPath: a.replicaPath, sizeBytes: a.size, blockSize: a.bs, retention, doneSeq: () => a.doneSeq, settledSeq: async () => a.doneSeq };
const tier = new BucketTier(src, store, { imageIntervalMs: 1e12, fullEvery: 3, pollIntervalMs: 3_600_000, retention: a.policy, expiryHook: (s) => { process.stdout.write('stage ' + s + '\\n'); } }, a.stateDir, log);
await import('node:fs').then((fs) => fs.promises.mkdir(a.stateDir + '/bucket-tier', { recursive: true }));
process.stdout.write('start\\n');
await tier.pass();
process.stdout.write('done\\n');
await tier.close();
`;

t.test('expiry SIGKILLed at random moments: the bucket stays consistent, no needed object is deleted', async (t) => {
  if (!privileged(t, ['swift-proxy-server', 'swift-object-server']) || !swiftAvailable()) return;
  const dir = tempDir(t);
  const swift = await SwiftStore.start(path.join(dir, 'swift'));
  t.teardown(() => swift.destroy());
  const creds = { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY };
  const s3 = new S3Client({ endpoint: swift.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds });
  t.teardown(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: 'tm-kill' }));
  const storeOpts = { endpoint: swift.endpoint, region: 'us-east-1', bucket: 'tm-kill', prefix: 'site', credentials: creds, partSizeBytes: 5 << 20, concurrency: 4 };

  const replicaPath = path.join(dir, 'replica.img');
  await fsp.writeFile(replicaPath, Buffer.alloc(SIZE, 0x22));
  const replica = await Replica.open(replicaPath, SIZE);
  t.teardown(() => replica.close());
  const retention = new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy: { windowMs: 1e13, appWindowMs: 1e13, tiers: [], pinTags: [] }, maxBytes: null, onFull: 'purge' }, log);
  await retention.open();
  let doneSeq = 0;
  const src: TierSource = { volumeId: 'v', replicaPath, sizeBytes: SIZE, blockSize: BS, retention, doneSeq: () => doneSeq, settledSeq: async () => doneSeq };
  const stateDir = path.join(dir, 'mt');
  await fsp.mkdir(path.join(stateDir, 'bucket-tier'), { recursive: true });
  const uploader = new BucketTier(src, new BucketStore(storeOpts), { imageIntervalMs: 0, fullEvery: 3, pollIntervalMs: 3_600_000 }, stateDir, log);

  // 60 differentials, an hour apart in apply time, the newest now; #3 carries a pinned tag; an image
  // every 5 points (full, incremental, incremental, full, ...).
  const rng = new Rng('bucket-expiry-kill');
  const t0 = Date.now();
  const states = new Map<number, Buffer>();
  const points: RecoveryPoint[] = [];
  for (let seq = 1; seq <= DIFFS; seq++) {
    const tip: RecoveryPoint = { seq, atMs: t0 - (DIFFS - seq) * HOUR, appliedAt: t0 - (DIFFS - seq) * HOUR, consistency: 'CRASH', tags: seq === 3 ? ['golden'] : [] };
    const block = rng.int(0, BLOCKS - 40);
    const extents = [{ offset: block * BS, length: rng.int(1, 40) * BS }];
    await retention.beforeApply(seq, extents, replica, points.at(-1) ?? null, tip);
    await replica.write(extents[0]!.offset, Buffer.from(Array.from({ length: extents[0]!.length }, () => rng.int(0, 256))));
    doneSeq = seq;
    states.set(seq, await replica.read(0, SIZE));
    points.push(tip);
    if (seq % 5 === 0) await uploader.pass();
  }
  await uploader.close();

  const store = new BucketStore(storeOpts);
  t.teardown(() => store.close());
  const allKeys = async (): Promise<Set<string>> => {
    const keys = new Set<string>();
    let token: string | undefined;
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: 'tm-kill', Prefix: 'site/', ContinuationToken: token }));
      for (const o of r.Contents ?? []) keys.add(o.Key!.slice('site/'.length));
      token = r.NextContinuationToken;
    } while (token);
    return keys;
  };
  const check = async (t: Test, what: string, exact: boolean): Promise<number[]> => {
    const m = await readManifest(store, 'v');
    const listed = listedKeys(m);
    const present = await allKeys();
    t.same([...listed].filter((k) => !present.has(k)), [], `${what}: every object the manifest lists exists`);
    const unlisted = [...present].filter((k) => !listed.has(k) && k !== manifestKey('v'));
    if (exact) t.same(unlisted, [], `${what}: nothing else is left in the bucket`);
    else t.same(unlisted.filter((k) => !(m.pendingDeletes ?? []).includes(k)), [], `${what}: every unlisted object is pending deletion (${unlisted.length})`);
    return bucketPoints(m).map((p) => p.seq);
  };
  const rebuild = async (t: Test, what: string, seqs: number[]): Promise<void> => {
    const bad: number[] = [];
    for (const seq of seqs) {
      const out = path.join(dir, `p${seq}.img`);
      await recoverFromBucket(store, 'v', { seq }, out, { force: true });
      if (!(await fsp.readFile(out)).equals(states.get(seq)!)) bad.push(seq);
      await fsp.rm(out);
    }
    t.same(bad, [], `${what}: points ${seqs.join(', ')} rebuilt from the bucket equal the replica as it was`);
  };

  const dist = (rel: string): string => new URL(rel, import.meta.url).href;
  const runChild = (policy: BucketRetention, n: number, killAfterMs: number | null): Promise<{ stages: string[]; killed: boolean; code: number | null }> => new Promise((resolve, reject) => {
    const args = { tier: dist('../../master-target/bucket/tier.js'), store: dist('../../master-target/bucket/store.js'), retention: dist('../../master-target/retention/retention-log.js'), log: dist('../../common/log.js'), retentionDir: path.join(dir, `child-retention-${n}`), size: SIZE, bs: BS, storeOpts, replicaPath, doneSeq: DIFFS, policy, stateDir: path.join(dir, `child-${n}`) };
    const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stages: string[] = [];
    let err = '';
    let killed = false;
    child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    child.stdout.on('data', (b: Buffer) => {
      for (const line of b.toString().split('\n').filter(Boolean)) {
        stages.push(line);
        if (line === 'start' && killAfterMs !== null) setTimeout(() => { killed = child.kill('SIGKILL') && child.exitCode === null; }, killAfterMs);
      }
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code !== 0 && signal !== 'SIGKILL') reject(new Error(`expiry child failed (${code ?? signal}): ${err}`));
      else resolve({ stages, killed: signal === 'SIGKILL' && killed, code });
    });
  });

  const before = await check(t, 'before expiry', true);
  t.same(before, points.map((p) => p.seq), 'every point is in the bucket before expiry');
  const d = (h: number): number => h * HOUR;
  const policies: BucketRetention[] = [
    { keepAllMs: d(12), tiers: [{ everyMs: d(4), forMs: d(1000) }], maxAgeMs: d(1000), maxBytes: null, pinTags: ['golden'], intervalMs: 0 },
    { keepAllMs: d(6), tiers: [{ everyMs: d(8), forMs: d(40) }], maxAgeMs: d(40), maxBytes: null, pinTags: ['golden'], intervalMs: 0 },
    { keepAllMs: d(4), tiers: [{ everyMs: d(12), forMs: d(30) }], maxAgeMs: d(30), maxBytes: null, pinTags: [], intervalMs: 0 },
    { keepAllMs: d(2), tiers: [{ everyMs: d(24), forMs: d(20) }], maxAgeMs: d(20), maxBytes: null, pinTags: [], intervalMs: 0 },
  ];
  let n = 0;
  let midExpiry = 0;
  let previous = before;
  for (const [pi, policy] of policies.entries()) {
    await t.test(`policy ${pi + 1}: expiry killed at random moments, then finished`, async (t) => {
      // What this policy keeps whatever happens: every point younger than keepAll, the newest, the pinned.
      const now = Date.now();
      const mustKeep = previous.filter((s) => now - points[s - 1]!.appliedAt <= policy.keepAllMs || s === DIFFS || points[s - 1]!.tags.some((tag) => policy.pinTags.includes(tag)));
      let finished = false;
      for (let k = 0; k < MAX_KILLS && !finished; k++) {
        const delay = rng.int(0, 300 + 250 * k);
        const r = await runChild(policy, n++, delay);
        const reached = r.stages.filter((s) => s.startsWith('stage ')).map((s) => s.slice(6));
        finished = !r.killed;
        if (r.killed && reached.length > 0) midExpiry++;
        t.comment(`child ${n}: ${r.killed ? `SIGKILL ${delay} ms after start, stages passed: ${reached.join(', ') || 'none'}` : `finished (${reached.join(', ') || 'nothing to do'})`}`);
        const mid = await check(t, `after child ${n}`, finished);
        t.same(mustKeep.filter((s) => !mid.includes(s)), [], `after child ${n}: every point the policy keeps is still listed`);
        for (const s of mid) if (!previous.includes(s)) t.fail(`#${s} came back after child ${n}`);
        await rebuild(t, `after child ${n}`, mid.filter((_, i) => i % 6 === 0 || i === mid.length - 1));
      }
      if (!finished) {
        const r = await runChild(policy, n++, null);
        t.equal(r.code, 0, 'a child left to run finishes');
      }
      const after = await check(t, `policy ${pi + 1} done`, true);
      t.ok(after.length < previous.length, `points expired: ${previous.length} → ${after.length}`);
      t.same(mustKeep.filter((s) => !after.includes(s)), [], 'every point the policy keeps is kept');
      await rebuild(t, `policy ${pi + 1} done`, after);
      previous = after;
    });
  }
  t.ok(midExpiry > 0, `${midExpiry} kills landed in the middle of an expiry (after a stage, before the end)`);
});
