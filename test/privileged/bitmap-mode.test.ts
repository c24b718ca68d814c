// Journal quota exhausted while the process server is away: the agent falls back to its dirty map
// (bitmap mode), says so in status, and when the process server returns drains the map, with no resync,
// to an identical replica.
import path from 'node:path';
import t from 'tap';
import { privileged } from './require-root.js';
import { agentMessages, protectedVolume, protectLab, sh, sha256, sleep, TREE } from './protected.js';

t.test('journal quota -> bitmap mode -> drained without resync', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4'])) return;
  const v = protectedVolume(t, 128);
  const lab = await protectLab(t, v, { tracker: 'blocktrace', capture: 'reflink' }, { journalQuotaBytes: 1024 * 1024, maxDiffBytes: 1024 * 1024 });
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  const resyncsBefore = (await agentMessages(lab)).filter((m) => m === 'resync started').length;
  t.equal(resyncsBefore, 1, 'the new volume was resynced once (the count below would pass at zero if the message changed)');

  await lab.stop('ps');
  await sh('sh', ['-c', `cp -r ${TREE} ${path.join(v.mnt, 'a')} && dd if=/dev/urandom of=${path.join(v.mnt, 'b')} bs=1M count=16 status=none && sync`]);
  let agent: Record<string, unknown> | undefined;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    agent = ((await lab.status('agent'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
    if (agent?.mode === 'bitmap') break;
    await sleep(250);
  }
  t.equal(agent?.mode, 'bitmap', 'the agent is in bitmap mode');
  t.match(String(agent?.modeReason), /journal quota/, 'because the journal quota is reached');
  t.ok(Number(agent?.dirtyBlocks) > 0, `the dirty map holds the changes (${String(agent?.dirtyBlocks)} blocks)`);
  t.ok(Number(agent?.journalBytes) <= 2 * 1024 * 1024, 'and the journal stays near its quota');

  // A restart in bitmap mode keeps the map (it is on disk): the restarted agent reports it before the
  // process server returns.
  await lab.kill('agent');
  lab.start('agent');
  let restarted: Record<string, unknown> | undefined;
  for (const end = Date.now() + 60_000; restarted?.mode !== 'bitmap' && Date.now() < end; await sleep(100)) {
    restarted = ((await lab.status('agent'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
  }
  t.equal(restarted?.mode, 'bitmap', 'the restarted agent is in bitmap mode again');
  t.ok(Number(restarted?.dirtyBlocks) > 0, `with the dirty map it kept (${String(restarted?.dirtyBlocks)} blocks)`);
  lab.start('ps');
  await sleep(1500);
  await sh('umount', [v.mnt]);
  await sleep(1500);
  await lab.waitConverged(Date.now(), 120_000);
  const after = ((await lab.status('agent'))?.volumes as Record<string, unknown>[])[0]!;
  t.equal(after.mode, 'data', 'back in data mode');
  t.ok((await agentMessages(lab)).includes('data mode: draining the dirty map'), 'after draining the dirty map');
  t.equal((await agentMessages(lab)).filter((m) => m === 'resync started').length, resyncsBefore, 'no resync: the dirty map was drained');
  t.equal(await sha256(v.replica), await sha256(v.dev), 'the replica equals the source');
  await sh('mount', [v.dev, v.mnt]);
});
