// A kernel ring buffer too small for the write rate overruns: the agent must notice (never silently
// miss a block), mark the volume for resync, and converge to an identical replica after it.
import t from 'tap';
import { privileged } from './require-root.js';
import { protectedVolume, protectLab, sh, sha256, sleep } from './protected.js';

t.test('a forced ring-buffer overrun turns into a resync and the replica converges', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'fio'])) return;
  const v = protectedVolume(t, 128);
  const lab = await protectLab(t, v, { tracker: 'blocktrace', capture: 'reflink' }, { blocktrace: { bufferKiB: 4, drainIntervalMs: 2000 } });
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);

  // Thousands of 4 KiB writes between two drains: far more events than 4 KiB per CPU can hold.
  await sh('fio', ['--name=burst', `--directory=${v.mnt}`, '--size=32m', '--bs=4k', '--rw=randwrite', '--ioengine=psync', '--direct=1', '--output=/dev/null']);
  await sh('sync', []);
  const deadline = Date.now() + 60_000;
  let lost: Record<string, unknown> | undefined;
  while (!lost && Date.now() < deadline) {
    lost = (await lab.logLines('agent')).find((l) => l.code === 'TM_ERR_TRACKING_LOST');
    if (!lost) await sleep(500);
  }
  t.equal(lost?.code, 'TM_ERR_TRACKING_LOST', 'the overrun was detected (TM_ERR_TRACKING_LOST)');
  t.equal(lost?.level, 50, 'and logged as an error');
  t.match(String(lost?.reason), /overran/, 'and named as an overrun');
  const resyncs = (await lab.logLines('agent')).filter((l) => l.msg === 'resync started' && /overran|consumed/.test(String(l.reason)));
  t.ok(resyncs.length >= 1, 'a resync was marked for it');

  await sh('umount', [v.mnt]);
  await sleep(2500);
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(v.replica), await sha256(v.dev), 'after the resync the replica equals the source');
  await sh('mount', [v.dev, v.mnt]);
});
