// Failover and failback with real daemons, image-file volumes on XFS (reflink capture gives points):
//  - planned failover, reverse replication, planned failback: the failed-over volume equals the source at
//    its final point, the original volume ends identical to the failed-over one, and each resync sends
//    only what changed (the agent's and the master target's byte counts);
//  - unplanned failover (agent SIGKILLed, no drain): the output equals the latest point, as the agent's
//    kept clone of that point shows.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { freePort, Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, received, startWriter } from '../integration/helpers.js';
import { Rng } from '../seed.js';
import { sha256, sleep } from './protected.js';
import { makeXfs, privileged, tempDir } from './require-root.js';

const BS = 4096;
const SIZE_MIB = 64;
const run = promisify(execFile);

/** `tidemark <args> --json`, its output parsed. */
async function cli(lab: Lab, args: string[]): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [TIDEMARK_BIN, ...args, '--json'], { cwd: lab.opts.dir, maxBuffer: 1 << 22 }).catch((e: { stderr?: string; message: string }) => {
    throw new Error(`tidemark ${args[0]}: ${e.stderr ?? e.message}`);
  });
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Writes of 1..16 blocks of random data at random block offsets until `bytes` are written; records the blocks. */
let scatters = 0;
async function scatter(file: string, bytes: number, blocks: Set<number>): Promise<void> {
  const rng = new Rng(`scatter:${scatters++}`);
  const fh = await fsp.open(file, 'r+');
  try {
    for (let done = 0; done < bytes;) {
      const n = Math.min(rng.int(1, 17), (bytes - done) / BS);
      const b = rng.int(0, (SIZE_MIB << 20) / BS - n);
      await fh.write(rng.bytes(n * BS), 0, n * BS, b * BS);
      for (let i = 0; i < n; i++) blocks.add(b + i);
      done += n * BS;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function volumeStatus(lab: Lab, name: 'agent' | 'mt' | 'ps'): Promise<Record<string, unknown>> {
  return ((await lab.status(name))?.volumes as Record<string, unknown>[])[0]!;
}

interface ResyncStats { bytesSent: number; hashBytes: number; differingBlocks: number }

/** Primary and secondary site folders on one XFS; a lab replicating primary/source.img to secondary/replica.img. */
async function sites(t: Test, agentVolume: Record<string, unknown>): Promise<{ lab: Lab; primary: string; secondary: string; source: string; replica: string }> {
  const xfs = makeXfs(t, 400).mnt;
  const primary = path.join(xfs, 'primary');
  const secondary = path.join(xfs, 'secondary');
  await fsp.mkdir(primary);
  await fsp.mkdir(secondary);
  const source = path.join(primary, 'source.img');
  const replica = path.join(secondary, 'replica.img');
  await makeImage(source, SIZE_MIB, 24);
  const lab = await Lab.create({
    dir: tempDir(t),
    recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink', ...agentVolume }, mt: { retention: { window: '1h' } } }],
    agent: { cycleIntervalMs: 300 },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  return { lab, primary, secondary, source, replica };
}

/** Sent during a resync: exactly the changed blocks (nothing fails, so nothing is re-sent); the hash exchange under 1% of the volume. */
function bounded(t: Test, what: string, r: ResyncStats, changedBytes: number): void {
  t.comment(`${what}: ${r.bytesSent} bytes sent for ${changedBytes} changed, ${r.hashBytes} bytes of hashes`);
  t.equal(r.bytesSent, changedBytes, `${what}: every changed block was sent, and nothing else`);
  t.ok(r.hashBytes < 0.01 * (SIZE_MIB << 20), `${what}: the hash exchange is under 1% of the volume`);
}

t.test('planned failover, reverse replication and planned failback: nothing lost, only changes travel', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const { lab, secondary, source, replica } = await sites(t, {});

  // The application writes, is stopped, and the volume fails over.
  await scatter(source, 2 << 20, new Set());
  const failedOver = path.join(secondary, 'failover.img');
  const fo = await cli(lab, ['failover', 'vol1', '--config', lab.configs.mt, '--out', failedOver, '--planned', '--agent-config', lab.configs.agent]);
  const final = fo.point as { seq: number };
  t.equal(fo.kind, 'planned', 'a planned failover');
  t.equal(await sha256(failedOver), await sha256(source), `the failed-over volume equals the source at its final point #${final.seq}: nothing lost`);
  t.equal(((await volumeStatus(lab, 'agent')).drained as { seq: number } | null)?.seq, final.seq, 'the agent protects the volume no more after that point');

  // The application runs at the secondary site.
  const changed = new Set<number>();
  await scatter(failedOver, 5 << 20, changed);

  const dir = path.join(lab.opts.dir, 'reverse');
  const rv = await cli(lab, ['reverse', 'vol1', '--config', lab.configs.mt, '--agent-config', lab.configs.agent, '--dir', dir, '--pki', path.join(lab.opts.dir, 'pki'),
    '--ps-port', String(await freePort()), '--mt-port', String(await freePort())]);
  t.same({ source: rv.source, original: rv.original, capture: rv.capture }, { source: failedOver, original: source, capture: 'reflink' }, 'reverse: the failed-over volume protected onto the original one');
  const rev = Lab.existing({ dir, volumes: [] });
  t.teardown(() => rev.stopAll());
  rev.start('mt');
  rev.start('ps');
  rev.start('agent');
  await rev.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(source), await sha256(failedOver), 'reverse replication: the original volume is identical to the failed-over one');
  t.ok((await rev.logLines('mt')).some((l) => String(l.msg).startsWith('seeded replica (attach-seeded)')), 'the original volume was adopted as a seeded replica');
  bounded(t, 'reverse initial sync', (await volumeStatus(rev, 'agent')).resync as ResyncStats, changed.size * BS);
  const got = await received(rev);
  t.ok(got.durable > 0, `the primary site's master target logged ${got.durable} differentials durable`);
  t.equal(got.distinct, changed.size * BS, `and received exactly the changed blocks (${got.distinct} bytes)`);
  t.equal(got.resends, 0, 'once each');

  // Reverse replication goes on continuously.
  await scatter(failedOver, 1 << 20, changed);
  await rev.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(source), await sha256(failedOver), 'and keeps the original volume in step');

  // Failback as on two machines: the final point taken where the reverse agent runs, named where the original volume is.
  const drained = await cli(lab, ['drain', 'vol1', '--config', path.join(dir, 'agent.json')]);
  const fb = await cli(lab, ['failback', 'vol1', '--reverse-dir', dir, '--seq', String(drained.seq), '--agent-config', lab.configs.agent]);
  await rev.stopAll();
  t.equal((fb.final as { seq: number }).seq, drained.seq, 'failback waited for the final point of the drain');
  t.equal(await sha256(source), await sha256(failedOver), `failback: the original volume holds the final point #${String(drained.seq)} of the failed-over one`);
  t.match(String(fb.resumed), /checksum resync/, 'and the forward agent protects it again');
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(replica), await sha256(source), 'back in the original direction, the replica equals the original volume again');
  bounded(t, 'forward resync after failback', (await volumeStatus(lab, 'agent')).resync as ResyncStats, changed.size * BS);
});

t.test('unplanned failover: the latest point, without the source', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const { lab, primary, secondary, source } = await sites(t, { reflink: { keep: 200 } });
  const writer = startWriter(source, SIZE_MIB << 20, 10);
  await sleep(3000);
  await lab.kill('agent');
  // Writes after the kill: in no point. Seen landing before the writer stops.
  const atKill = writer.written;
  while (writer.written === atKill) await sleep(10);
  await writer.stop();
  // Let the pipeline settle: the master target applies all that reached the process server.
  for (let i = 0; i < 200; i++) {
    const [ps, mt] = [await volumeStatus(lab, 'ps'), await volumeStatus(lab, 'mt')];
    if (ps.backlogFiles === 0 && mt.appliedSeq === ps.storedSeq) break;
    await sleep(100);
  }
  const latest = ((await volumeStatus(lab, 'mt')).lastCrashPoint as { seq: number }).seq;
  // The master target need not run: the command then reads its state folder itself.
  await lab.stop('mt');
  const out = path.join(secondary, 'failover.img');
  const fo = await cli(lab, ['failover', 'vol1', '--config', lab.configs.mt, '--out', out]);
  const point = fo.point as { seq: number };
  t.equal(fo.kind, 'unplanned', 'an unplanned failover');
  t.equal(point.seq, latest, `the latest point #${point.seq} was recovered`);
  const kept = path.join(primary, '.tidemark-clones', `vol1-${String(point.seq).padStart(10, '0')}.img`);
  t.equal(await sha256(out), await sha256(kept), 'the failed-over volume equals the source at that point (the clone the agent kept of it)');
  t.not(await sha256(out), await sha256(source), 'and not the source now, which was written after the agent was killed');
});
