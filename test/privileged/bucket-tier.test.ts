// The bucket tier end to end against a real object store (OpenStack Swift's S3 API on loopback): random
// writes with the tier on, the agent keeping a reflink clone of every point; then the master target's
// state folder and replica are deleted entirely, and points listed by `tidemark points --from s3://…`
// (the oldest, the newest, ones local thinning had already removed) are rebuilt by `tidemark recover
// --from s3://…` alone and compared byte for byte with the clones. Wrong credentials and a missing bucket
// are refused with their codes.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { STATUS_PORT_FILE } from '../../common/status-server.js';
import { makeImage, startWriter, waitFor } from '../integration/helpers.js';
import { Rng } from '../seed.js';
import { SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY, SwiftStore } from '../swift-harness.js';
import { makeXfs, privileged, tempDir } from './require-root.js';
import { sha256, sleep } from './protected.js';

const execFileP = promisify(execFile);
const SIZE_MIB = 16;

interface Point { seq: number; atMs: number; consistency: string; tags: string[] }

async function tm(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ ok: boolean; out: string }> {
  return execFileP(process.execPath, [TIDEMARK_BIN, ...args], { maxBuffer: 16 << 20, timeout: 120_000, env: { ...process.env, ...env } })
    .then((r) => ({ ok: true, out: r.stdout }), (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
}

t.test('points rebuilt from the bucket alone equal the agent\'s clones', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'swift-proxy-server', 'swift-object-server'])) return;
  const xfs = makeXfs(t, 900).mnt;
  const swift = await SwiftStore.start(path.join(tempDir(t), 'swift'));
  t.teardown(() => swift.destroy());
  const s3 = new S3Client({ endpoint: swift.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY } });
  await s3.send(new CreateBucketCommand({ Bucket: 'tidemark-dr' }));
  s3.destroy();

  const dir = tempDir(t);
  const creds = path.join(dir, 's3-credentials.json');
  await fsp.writeFile(creds, JSON.stringify({ accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY }), { mode: 0o600 });
  const source = path.join(xfs, 'source.img');
  const clones = path.join(xfs, 'clones');
  await makeImage(source, SIZE_MIB, SIZE_MIB);
  // Local thinning from 8 s on: the bucket keeps the per-differential segments it got first.
  const retention = { window: '1h', tiers: [{ after: '8s', every: '6s' }], maintenanceIntervalMs: 500 };
  const objectStore = { endpoint: swift.endpoint, bucket: 'tidemark-dr', prefix: 'site-a', credentialsFile: creds, imageInterval: '4s', fullEvery: 3, pollIntervalMs: 300 };
  const lab = await Lab.create({
    dir,
    recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica: path.join(xfs, 'replica.img'), agent: { capture: 'reflink', reflink: { dir: clones, keep: 5000 } }, mt: { retention, objectStore } }],
    agent: { cycleIntervalMs: 400 },
  });
  t.teardown(() => lab.stopAll());
  const clonePath = (seq: number): string => path.join(clones, `vol1-${String(seq).padStart(10, '0')}.img`);
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);

  const rng = new Rng('bucket-tier');
  const writer = startWriter(source, SIZE_MIB << 20, 15);
  await sleep(rng.int(12_000, 15_000));
  await writer.stop();
  await lab.waitConverged(Date.now(), 120_000);
  const mtVolume = async (): Promise<Record<string, unknown>> => ((await lab.status('mt'))?.volumes as Record<string, unknown>[])[0]!;
  const applied = Number((await mtVolume()).appliedSeq);
  await waitFor(async () => Number(((await mtVolume()).objectStore as { imageSeq: number } | null)?.imageSeq) >= applied, 60_000, `the bucket holds an image at #${applied}`).catch(async (e) => {
    t.comment(JSON.stringify((await mtVolume()).objectStore), (await lab.logLines('mt')).filter((l) => l.component === 'bucket-tier' || Number(l.level) >= 50).slice(-10));
    throw e;
  });
  const tier = (await mtVolume()).objectStore as Record<string, unknown>;
  t.equal(tier.lastError, null, 'the tier reports no error');
  t.notMatch(JSON.stringify(await lab.status('mt')), new RegExp(SWIFT_SECRET_KEY), 'status never shows the secret');
  const statusPort = Number((await fsp.readFile(path.join(lab.stateDirs.mt, STATUS_PORT_FILE), 'utf8')).trim());
  {
    const metrics = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text();
    t.match(metrics, /tidemark_bucket_backlog_segments\{volume="vol1"\} 0/, 'metrics: no backlog once caught up');
    t.match(metrics, new RegExp(`tidemark_bucket_image_sequence\\{volume="vol1"\\} ${applied}`), 'metrics: the bucket\'s newest image');
  }
  // Points age into local thinning 8 s after they were made: wait (bounded) until the bucket holds at
  // least two that local retention has already thinned, however long a busy machine took to get here.
  const from = ['--from', 's3://tidemark-dr/site-a', '--endpoint', swift.endpoint, '--credentials', creds];
  const seqsOf = (out: string): number[] => (JSON.parse(out) as { points: Point[] }).points.map((p) => p.seq);
  let local = new Set<number>();
  await waitFor(async () => {
    local = new Set(seqsOf((await tm(['points', 'vol1', '--config', lab.configs.mt, '--json'])).out));
    const inBucket = await tm(['points', 'vol1', ...from, '--json']);
    return inBucket.ok && seqsOf(inBucket.out).filter((q) => !local.has(q)).length >= 2;
  }, 60_000, 'two points in the bucket that local retention has thinned');

  // The secondary site is lost: daemons stopped, the master target's state folder and replica deleted.
  await lab.stopAll();
  await fsp.rm(lab.stateDirs.mt, { recursive: true, force: true });
  await fsp.rm(path.join(xfs, 'replica.img'), { force: true });
  const logs = (await fsp.readdir(dir)).filter((n) => n.endsWith('.log'));
  for (const l of logs) t.notMatch(await fsp.readFile(path.join(dir, l), 'utf8'), new RegExp(`"${SWIFT_SECRET_KEY}"`), `${l} never shows the secret`);

  const listed = await tm(['points', 'vol1', ...from, '--json']);
  t.ok(listed.ok, `points --from lists the bucket ${listed.ok ? '' : listed.out}`);
  const points = (JSON.parse(listed.out) as { points: Point[] }).points;
  t.ok(points.length >= 12, `${points.length} points in the bucket`);
  const bucketOnly = points.filter((p) => !local.has(p.seq));
  t.ok(bucketOnly.length >= 2, `${bucketOnly.length} of them were already thinned from local retention`);
  const picks = [points[0]!, points.at(-1)!, ...rng.shuffle(bucketOnly).slice(0, 3), ...rng.shuffle(points.slice(1, -1)).slice(0, 7)];
  const seen = new Set<number>();
  let exact = 0;
  for (const p of picks.filter((x) => !seen.has(x.seq) && seen.add(x.seq))) {
    const out = path.join(xfs, `from-bucket-${p.seq}.img`);
    const r = await tm(['recover', 'vol1', ...from, '--seq', String(p.seq), '--out', out, '--json']);
    if (!r.ok) {
      t.fail(`recover #${p.seq} from the bucket: ${r.out}`);
      continue;
    }
    if ((await sha256(out)) === (await sha256(clonePath(p.seq)))) exact++;
    else t.fail(`point #${p.seq} rebuilt from the bucket differs from the agent's clone`);
    await fsp.rm(out);
  }
  t.ok(exact >= 10, `${exact} points (the oldest #${points[0]!.seq} and newest #${points.at(-1)!.seq} included) rebuilt from the bucket equal their clones byte for byte`);
  t.equal(exact, seen.size, 'every one of them');
  const mid = points[Math.floor(points.length / 2)]!;
  const byTime = path.join(xfs, 'by-time.img');
  const rt = await tm(['recover', 'vol1', ...from, '--at', new Date(mid.atMs).toISOString(), '--out', byTime]);
  t.ok(rt.ok, `recover --at from the bucket ${rt.ok ? '' : rt.out}`);
  t.equal(await sha256(byTime), await sha256(clonePath(mid.seq)), 'picks that point, exactly');

  // Bad input: clear codes, no output.
  const badCreds = path.join(dir, 'bad.json');
  await fsp.writeFile(badCreds, JSON.stringify({ accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: 'wrong-secret' }));
  const out = path.join(xfs, 'never.img');
  const wrong = await tm(['recover', 'vol1', '--from', 's3://tidemark-dr/site-a', '--endpoint', swift.endpoint, '--credentials', badCreds, '--latest', '--out', out]);
  t.match(wrong.out, /TM_ERR_BUCKET_AUTH/, 'wrong credentials: TM_ERR_BUCKET_AUTH');
  t.notMatch(wrong.out, /wrong-secret/, 'and the secret is not echoed');
  const missing = await tm(['points', 'vol1', '--from', 's3://no-such-bucket/site-a', '--endpoint', swift.endpoint, '--credentials', creds]);
  t.match(missing.out, /TM_ERR_BUCKET_MISSING/, 'a missing bucket: TM_ERR_BUCKET_MISSING');
  const noVol = await tm(['points', 'vol9', ...from]);
  t.match(noVol.out, /TM_ERR_POINT_NOT_FOUND/, 'a volume the bucket has no history of: TM_ERR_POINT_NOT_FOUND');
  t.notOk(await fsp.stat(out).then(() => true, () => false), 'nothing was written');
});
