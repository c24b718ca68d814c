// Background verify with real daemons: passes run on their own, blocks being written during a pass are
// not called damage, and bytes flipped in the replica behind the master target are found, alerted and
// repaired through the normal path until the replica equals the source again.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { makeImage, scratchDir, sha256, sleep, startWriter } from './helpers.js';
import { Rng } from '../seed.js';

const rng = new Rng('background-verify');

const BS = 4096;
const SIZE_MIB = 32;

interface VerifyStatus { passes: number; damagedBlocks: number; repairedBlocks: number; lastPassAgeMs: number | null }

async function verifyStatus(lab: Lab): Promise<{ verify: VerifyStatus; resync: { active: boolean; background: boolean } }> {
  const a = await lab.status('agent');
  const v = (a?.volumes as Record<string, unknown>[] | undefined)?.[0];
  return { verify: v?.verify as VerifyStatus, resync: v?.resync as { active: boolean; background: boolean } };
}

async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

t.test('background verify: no damage reported for writes in flight; flipped replica bytes found and repaired', async (t) => {
  const dir = await scratchDir(t, 'bgverify');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE_MIB, SIZE_MIB);
  const lab = await Lab.create({
    dir, volumes: [{ id: 'vol1', source, replica }],
    agent: { cycleIntervalMs: 300, resyncWindowBytes: 4 << 20, verify: { startDelayMs: 0, intervalMs: 0, bytesPerSecond: 64 << 20 } },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 60_000);

  // A busy writer during passes: blocks written after the last cycle differ from the replica when a window
  // is read. Go on until a pass has seen such blocks, so the check below is not vacuous.
  const writer = startWriter(source, SIZE_MIB << 20, 2);
  const inFlight = async (): Promise<number> => (await lab.logLines('agent'))
    .filter((l) => l.msg === 'background verify pass complete: the replica equals the source')
    .reduce((n, l) => n + Number(l.inFlightBlocks), 0);
  await until('a pass that saw blocks in flight', 120_000, async () => {
    if ((await verifyStatus(lab)).verify.damagedBlocks > 0) throw new Error('blocks written during a pass were reported as damage');
    return (await inFlight()) > 0;
  });
  await writer.stop();
  t.ok((await inFlight()) > 0, 'passes saw blocks that differed because they were being written');
  t.equal((await verifyStatus(lab)).verify.damagedBlocks, 0, 'and none of them was reported as damage');
  await lab.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(replica), await sha256(source), 'the replica equals the source after the writer');

  // Damage behind the master target: three bytes in three blocks of the replica file.
  const blocks = new Set<number>();
  while (blocks.size < 3) blocks.add(rng.int(0, (SIZE_MIB << 20) / BS));
  const fh = await fsp.open(replica, 'r+');
  for (const b of blocks) {
    const at = b * BS + rng.int(0, BS);
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0xff;
    await fh.write(one, 0, 1, at);
  }
  await fh.sync();
  await fh.close();
  t.not(await sha256(replica), await sha256(source), 'the replica is damaged');
  await until('the damaged blocks repaired', 120_000, async () => {
    const s = await verifyStatus(lab);
    return s.verify.repairedBlocks >= blocks.size && !(s.resync.active && s.resync.background && s.verify.repairedBlocks < blocks.size);
  });
  const s = await verifyStatus(lab);
  t.equal(s.verify.damagedBlocks, blocks.size, 'exactly the flipped blocks were found as damage');
  t.equal(s.verify.repairedBlocks, blocks.size, 'and repaired');
  const alerts = (await lab.logLines('agent')).filter((l) => l.msg === 'background verify: replica blocks differ from the source where nothing was being written; repairing them');
  t.ok(alerts.length >= 1, 'an alert was raised');
  await lab.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(replica), await sha256(source), 'the replica equals the source again');
  t.ok(s.verify.passes >= 2 && s.verify.lastPassAgeMs !== null, 'status shows the passes and the age of the last');
});
