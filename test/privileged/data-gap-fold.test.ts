// Data mode in a gap (issue 13): writes faster than the agent can journal fill the reader's small queue,
// records are dropped and the stream has a gap. While it lasts no point can be claimed, so the tracker
// folds queued records into dirty blocks instead of journaling their data, and catches up with one
// re-read of the touched blocks. Checked: the replica equals the source, points resume, and far fewer
// bytes are journaled than were written. Then the agent is SIGKILLed twice in the middle of a gap: the
// folded blocks are in the kernel's pinned dirty maps, so the restarted agent re-reads them; no resync.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { dataPinName } from '../../agent/trackers/data.js';
import { ensureBpffs } from '../../native/datacap.js';
import { attachLoop, makeXfs, privileged, tempDir, tool } from './require-root.js';
import { agentMessages, sh, sha256, sleep } from './protected.js';

const VOLUME = 64 * 2 ** 20;

t.test('data mode: a gap folds queued writes into dirty blocks; one re-read catches up', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'fio'])) return;
  const xfs = makeXfs(t, 400).mnt;
  const image = path.join(xfs, 'source.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, VOLUME);
  const dev = attachLoop(t, image);
  const replica = path.join(xfs, 'replica.img');
  const dir = tempDir(t);
  const lab = await Lab.create({
    dir,
    volumes: [{ id: 'vol1', source: dev, replica, agent: { tracker: 'data', capture: 'none' } }],
    agent: { cycleIntervalMs: 1000, data: { ringMiB: 8, queueMiB: 4, fifoPriority: 1 } },
  });
  t.teardown(async () => {
    await lab.stopAll();
    fs.rmSync(path.join(ensureBpffs(), dataPinName(path.join(dir, 'agent-state', 'volumes', 'vol1'))), { recursive: true, force: true });
  });
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 60_000);
  const applied = async (): Promise<Array<Record<string, unknown>>> => (await lab.logLines('mt')).filter((l) => l.msg === 'differential applied');
  const before = (await applied()).length;

  // About 100 MiB/s of 64 KiB direct random writes for 12 s: several times what the agent journals.
  const out = await sh(tool('fio')!, ['--name=churn', `--filename=${dev}`, '--rw=randwrite', '--bs=64k', '--direct=1', '--ioengine=libaio', '--iodepth=8',
    '--rate=100m', '--time_based', '--runtime=12', '--output-format=json', '--randrepeat=0']);
  const written = Number((JSON.parse(out.stdout) as { jobs: Array<{ write: { io_bytes: number } }> }).jobs[0]!.write.io_bytes);
  const stopped = Date.now();
  // A cycle that only folds journals nothing (lastCycleBytes 0), which Lab.converged alone would take for
  // convergence: wait for the gap to close and the dirty blocks to be re-read too.
  // An agent not answering yet (restarting) reads as "not caught up".
  const trackerStats = async (): Promise<Record<string, number>> => {
    const vols = (await lab.status('agent'))?.volumes as Array<Record<string, unknown>> | undefined;
    return (vols?.[0]?.trackerStats as Record<string, number> | undefined) ?? { inGap: -1, dirtyBlocks: -1, queuedBytes: -1 };
  };
  for (let st = await trackerStats(); st.inGap !== 0 || st.dirtyBlocks !== 0 || st.queuedBytes !== 0; st = await trackerStats()) {
    if (Date.now() - stopped > 60_000) throw new Error(`the gap never closed: ${JSON.stringify(st)}`);
    await sleep(250);
  }
  await lab.waitConverged(Date.now(), 60_000);

  t.equal(await sha256(replica), await sha256(dev), 'the replica equals the source');
  const stats = await trackerStats();
  t.comment(`tracker: ${JSON.stringify(stats)}`);
  t.ok(stats.userDrops! + stats.drops! > 0, `the queue overflowed (${stats.userDrops} records dropped by the reader, ${stats.drops} in the kernel): a gap`);
  t.ok(stats.foldedBytes! > 0, `${stats.foldedBytes} bytes of queued writes folded into dirty blocks`);
  // Once after the initial resync, once after the gap of the writes.
  t.ok((await agentMessages(lab)).filter((m) => m === 'data mode: dirty blocks re-read; points resume').length >= 2, 'the gap closed');
  t.ok(stats.reReadBlocks! <= 2 * VOLUME / 4096, `${stats.reReadBlocks} blocks re-read: about one read of the volume, not one per cycle`);
  // Points resume: a CRASH point applied after the writes stopped.
  await sleep(3000);
  const since = (await applied()).slice(before);
  t.ok(since.some((l) => l.consistency === 'CRASH'), 'CRASH points resume after the gap');
  const journaled = since.reduce((n, l) => n + Number(l.bytes ?? 0), 0);
  t.comment(`written ${(written / 2 ** 20).toFixed(0)} MiB, journaled ${(journaled / 2 ** 20).toFixed(0)} MiB`);
  t.ok(written > 6 * VOLUME, 'the writes were several times the volume');
  // Without folding the agent journals a differential of the stale writes every cycle or two (about
  // 16 MiB/s) all through the gap; folded, only re-reads of touched blocks are journaled.
  t.ok(journaled < written / 8, 'far fewer bytes journaled than written');

  // The agent SIGKILLed twice while a gap is open and writes keep coming: what it had folded into dirty
  // blocks (and never journaled) must survive in the pinned maps and be re-read after the restart.
  const burst = sh(tool('fio')!, ['--name=churn2', `--filename=${dev}`, '--rw=randwrite', '--bs=64k', '--direct=1', '--ioengine=libaio', '--iodepth=8',
    '--rate=100m', '--time_based', '--runtime=14', '--randrepeat=0']);
  for (let k = 0; k < 2; k++) {
    const since = Date.now();
    let st = await trackerStats();
    while (!(st.inGap !== 0 && st.foldedBytes! > 0) && Date.now() - since < 20_000) {
      await sleep(100);
      st = await trackerStats();
    }
    t.ok(st.inGap !== 0 && st.foldedBytes! > 0, `kill ${k + 1}: the agent is in a gap with ${st.foldedBytes} bytes folded, none of them journaled`);
    await lab.kill('agent');
    await sleep(500);
    lab.start('agent');
    await sleep(1500);
  }
  await burst;
  const burstEnd = Date.now();
  for (let st = await trackerStats(); st.inGap !== 0 || st.dirtyBlocks !== 0 || st.queuedBytes !== 0; st = await trackerStats()) {
    if (Date.now() - burstEnd > 90_000) throw new Error(`the gap never closed after the restarts: ${JSON.stringify(st)}`);
    await sleep(250);
  }
  await lab.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(replica), await sha256(dev), 'after two SIGKILLs in a gap the replica equals the source');
  t.equal((await agentMessages(lab)).filter((m) => m === 'resync started').length, 1, 'no resync after the SIGKILLs: the initial one only');
  t.equal((await lab.logLines('agent')).filter((l) => l.code === 'TM_ERR_TRACKING_LOST').length, 0, 'no write request went unseen');
});
