// A replica file replaced under its path (issue 11 item 5) — `mv` of a copy over it while the master target
// runs, `cp --remove-destination` of an older copy while it is stopped — must be noticed
// (TM_ERR_REPLICA_REPLACED), never written through the old inode, and brought equal to the source by a resync.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { Rng } from '../seed.js';
import { makeImage, scratchDir, sha256, waitFor } from './helpers.js';

const run = promisify(execFile);
const SIZE_MIB = 16;
const BS = 4096;
const rng = new Rng('replica-replaced');

async function lab(t: Test, name: string, mt?: Record<string, unknown>): Promise<{ lab: Lab; source: string; replica: string }> {
  const dir = await scratchDir(t, name);
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE_MIB, 8);
  const l = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica, ...(mt ? { mt } : {}) }], agent: { cycleIntervalMs: 200, maxDiffBytes: 1 << 20 } });
  t.teardown(() => l.stopAll());
  return { lab: l, source, replica };
}

/** Write seeded random data to `count` blocks of the source spread from `first`. */
async function writeBlocks(source: string, first: number, count: number): Promise<void> {
  const fh = await fsp.open(source, 'r+');
  for (let i = 0; i < count; i++) await fh.write(rng.bytes(BS), 0, BS, (first + i * 29) * BS);
  await fh.close();
}

async function mtVolume(l: Lab): Promise<Record<string, unknown> | undefined> {
  return ((await l.status('mt'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
}

async function replacedSeen(l: Lab): Promise<boolean> {
  return Number((await mtVolume(l))?.replicaReplacements ?? 0) >= 1;
}

t.test('replica replaced by mv while the master target runs: noticed, resynced, equal to the source', async (t) => {
  const { lab: l, source, replica } = await lab(t, 'replaced-running');
  l.start('mt');
  l.start('ps');
  l.start('agent');
  await l.waitConverged(Date.now(), 120_000);
  const copy = `${replica}.copy`;
  await fsp.copyFile(replica, copy);
  // The copy falls behind: these writes reach the replica the master target has open, not the copy.
  await writeBlocks(source, 100, 24);
  await l.waitConverged(Date.now(), 120_000);
  t.not(await sha256(copy), await sha256(source), 'the copy is older than the source');

  await fsp.rename(copy, replica); // the open inode is now unlinked
  await writeBlocks(source, 3000, 16);
  await l.waitConverged(Date.now(), 180_000);
  t.equal(await sha256(replica), await sha256(source), 'the file at the replica path equals the source');
  await waitFor(() => replacedSeen(l), 30_000, 'the master target to report the replaced replica');
  const v = (await mtVolume(l))!;
  t.equal(v.consistent, true, 'consistent again, after the resync');
  t.match(String((v.replicaReplaced as { reason: string }).reason), /was replaced \(inode/, 'status says how the replica was replaced');
  t.ok((await l.logLines('mt')).some((x) => x.code === 'TM_ERR_REPLICA_REPLACED'), 'the master target logged TM_ERR_REPLICA_REPLACED');
  t.ok((await l.logLines('agent')).some((x) => x.msg === 'resync started' && String(x.reason).includes('TM_ERR_REPLICA_REPLACED')), 'the agent ran a resync for it');
});

t.test('replica replaced by cp --remove-destination while the master target is stopped: not trusted against the old table', async (t) => {
  const { lab: l, source, replica } = await lab(t, 'replaced-stopped', { retention: { window: '1h' } });
  l.start('mt');
  l.start('ps');
  l.start('agent');
  await l.waitConverged(Date.now(), 120_000);
  const older = path.join(l.opts.dir, 'replica.backup');
  await fsp.copyFile(replica, older);
  await writeBlocks(source, 200, 24);
  await l.waitConverged(Date.now(), 120_000);

  await l.stop('mt');
  // A new file at the same path; the inode number may even be reused, its birth time is not.
  await run('cp', ['--remove-destination', older, replica]);
  t.not(await sha256(replica), await sha256(source), 'the restored copy is older than the source');
  // Offline recovery would roll the new file back with the old one's before-images: refused.
  const offline = await run(process.execPath, [TIDEMARK_BIN, 'recover', 'vol1', '--latest', '--out', path.join(l.opts.dir, 'out.img'), '--config', l.configs.mt], { cwd: l.opts.dir })
    .then((r) => r.stdout + r.stderr, (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}`);
  t.match(offline, /TM_ERR_REPLICA_REPLACED/, 'offline recover refuses a replaced replica');
  l.start('mt');
  await writeBlocks(source, 2000, 8);
  await l.waitConverged(Date.now(), 180_000);
  t.equal(await sha256(replica), await sha256(source), 'the file at the replica path equals the source');
  t.ok(await replacedSeen(l), 'status counts the replacement');
  t.ok((await l.logLines('mt')).some((x) => x.code === 'TM_ERR_REPLICA_REPLACED'), 'the master target logged TM_ERR_REPLICA_REPLACED');
});
