// A new master target seeded from the bucket: the secondary site is lost, a new one gets its replica by
// `tidemark recover --from s3://…` (no master target anywhere), adopts it with `attach-seeded`, and
// replication resumes sending only the blocks that differ. Against a real object store (OpenStack Swift's
// S3 API on loopback) and real daemons: a 32 MiB source is replicated with the bucket tier on until the
// bucket holds its newest point; everything stops; exactly 40 blocks of the source are rewritten; the
// master target's state and replica are deleted (and the agent's and process server's state: a new pairing);
// the replica is rebuilt from the bucket and attached as a seed. The initial sync must send exactly those
// 40 blocks (163,840 bytes) and end with the replica equal to the source, byte for byte.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, startWriter, waitFor } from '../integration/helpers.js';
import { Rng } from '../seed.js';
import { SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY, SwiftStore } from '../swift-harness.js';
import { makeXfs, privileged, tempDir } from './require-root.js';
import { sha256, sleep } from './protected.js';

const execFileP = promisify(execFile);
const SIZE_MIB = 32;
const BS = 4096;
const CHANGED_BLOCKS = 40;

async function tm(args: string[], cwd?: string): Promise<{ ok: boolean; out: string }> {
  return execFileP(process.execPath, [TIDEMARK_BIN, ...args], { maxBuffer: 16 << 20, timeout: 300_000, cwd })
    .then((r) => ({ ok: true, out: r.stdout }), (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
}

t.test('a master target seeded from the bucket resumes sending only the blocks that differ', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'swift-proxy-server', 'swift-object-server'])) return;
  const xfs = makeXfs(t, 600).mnt;
  const swift = await SwiftStore.start(path.join(tempDir(t), 'swift'));
  t.teardown(() => swift.destroy());
  const s3 = new S3Client({ endpoint: swift.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY } });
  await s3.send(new CreateBucketCommand({ Bucket: 'tidemark-seed' }));
  s3.destroy();

  const dir = tempDir(t);
  const creds = path.join(dir, 's3-credentials.json');
  await fsp.writeFile(creds, JSON.stringify({ accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY }), { mode: 0o600 });
  const source = path.join(xfs, 'source.img');
  const replica = path.join(xfs, 'replica.img');
  await makeImage(source, SIZE_MIB, SIZE_MIB);
  const objectStore = { endpoint: swift.endpoint, bucket: 'tidemark-seed', prefix: 'site-a', credentialsFile: creds, imageInterval: '2s', fullEvery: 3, pollIntervalMs: 300 };
  const lab = await Lab.create({
    dir,
    recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink', reflink: { dir: path.join(xfs, 'clones'), keep: 50 } }, mt: { retention: { window: '1h' }, objectStore } }],
    agent: { cycleIntervalMs: 400 },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 180_000);
  const writer = startWriter(source, SIZE_MIB << 20, 15);
  await sleep(4000);
  await writer.stop();
  await lab.waitConverged(Date.now(), 180_000);
  const mtVolume = async (): Promise<Record<string, unknown>> => ((await lab.status('mt'))?.volumes as Record<string, unknown>[])[0]!;
  // The agent makes a point of the last writes: wait until it is applied and the bucket can rebuild it.
  const from = ['--from', 's3://tidemark-seed/site-a', '--endpoint', swift.endpoint, '--credentials', creds];
  let newest = 0;
  await waitFor(async () => {
    const applied = Number((await mtVolume()).appliedSeq);
    const listed = await tm(['points', 'vol1', ...from, '--json']);
    if (!listed.ok) return false;
    newest = (JSON.parse(listed.out) as { points: Array<{ seq: number }> }).points.at(-1)?.seq ?? 0;
    return newest > 0 && newest === applied;
  }, 120_000, 'the bucket holds the newest applied point');
  await lab.stopAll();
  const atPoint = await sha256(source);

  // While nothing runs, exactly 40 blocks of the source change.
  const rng = new Rng('bucket-seed');
  const chosen = new Set<number>();
  while (chosen.size < CHANGED_BLOCKS) chosen.add(rng.int(0, (SIZE_MIB << 20) / BS));
  const fh = await fsp.open(source, 'r+');
  for (const b of chosen) await fh.write(rng.bytes(BS), 0, BS, b * BS);
  await fh.close();

  // The secondary site is lost; a new pairing starts from the bucket.
  for (const d of Object.values(lab.stateDirs)) await fsp.rm(d, { recursive: true, force: true });
  await fsp.rm(replica, { force: true });
  const rec = await tm(['recover', 'vol1', ...from, '--seq', String(newest), '--out', replica, '--json']);
  t.ok(rec.ok, `recover --from the bucket ${rec.ok ? '' : rec.out}`);
  t.equal(await sha256(replica), atPoint, `the replica rebuilt from the bucket is the source at point #${newest}`);
  // The new master target keeps its own history under another prefix.
  const cfg = JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as { volumes: Array<{ objectStore: { prefix: string } }> };
  cfg.volumes[0]!.objectStore.prefix = 'site-b';
  await fsp.writeFile(lab.configs.mt, JSON.stringify(cfg, null, 2));
  const attached = await tm(['attach-seeded', 'vol1', '--config', lab.configs.mt], dir);
  t.match(attached.out, 'attached', `attach-seeded adopts the replica from the bucket ${attached.ok ? '' : attached.out}`);

  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 180_000);
  const resync = ((await lab.status('agent'))?.volumes as Array<{ resync: { bytesSent: number; hashBytes: number } }>)[0]!.resync;
  t.equal(resync.bytesSent, CHANGED_BLOCKS * BS, `the initial sync sent exactly the ${CHANGED_BLOCKS * BS} bytes that differ (of ${SIZE_MIB << 20})`);
  t.comment(`hash exchange: ${resync.hashBytes} bytes`);
  await lab.stopAll();
  t.equal(await sha256(replica), await sha256(source), 'at the end the replica equals the source, byte for byte');
  t.ok((await lab.logLines('mt')).some((l) => String(l.msg).startsWith('seeded replica (attach-seeded)')), 'the master target hashed the attached seed');
});
