// Data mode under a filesystem (issue 13's ext4 test): ext4 with 4 KiB blocks on the protected loop
// device, tracker "data", capture "none". The workload: fio random writes with verify=crc32c (fio reads
// back and checks what it wrote), copies of a tree of real files, deletes and fstrim, while the master
// target snapshots every CRASH point. Each checked point must be a filesystem e2fsck finds clean once
// its journal is replayed (a crash image); fio's own read-back check (verify=crc32c, fatal) passes on the
// source, and at the end, the filesystem unmounted, the replica equals the source byte for byte.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ensureBpffs } from '../../native/datacap.js';
import { dataPinName } from '../../agent/trackers/data.js';
import { privileged, run, tool } from './require-root.js';
import { fsckClean, protectedVolume, protectLab, sh, sha256, sleep, TREE } from './protected.js';

t.test('data mode on ext4: fio verify=crc32c, copies, deletes, fstrim; every checked point fscks clean; replica equals source', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'e2fsck', 'fio', 'fstrim'])) return;
  // 512 MiB: mkfs.ext4 makes 4 KiB blocks (1 KiB ones below; data mode re-reads part-block writes).
  const v = protectedVolume(t, 512);
  const lab = await protectLab(t, v, { tracker: 'data', capture: 'none' }, { data: { ringMiB: 64, queueMiB: 256, fifoPriority: 1 } }, { snapshots: { dir: v.mtSnapshots, keep: 100000 } });
  t.teardown(() => fs.rmSync(path.join(ensureBpffs(), dataPinName(path.join(lab.opts.dir, 'agent-state', 'volumes', 'vol1'))), { recursive: true, force: true }));
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  const startedAt = Date.now();

  const fioArgs = ['--name=v', `--filename=${path.join(v.mnt, 'fio.dat')}`, '--size=96m', '--rw=randwrite', '--bs=4k', '--ioengine=psync', '--verify=crc32c', '--verify_fatal=1', '--randseed=11', '--rate=8m'];
  // fio writes, then reads back and checks every block it wrote (do_verify, the default with verify=).
  const fio = sh('fio', [...fioArgs, '--direct=0', '--fsync=256']);
  const copies = (async () => {
    for (let i = 0; i < 3; i++) {
      await sh('cp', ['-r', TREE, path.join(v.mnt, `tree${i}`)]);
      await sleep(1500);
      if (i > 0) await sh('rm', ['-rf', path.join(v.mnt, `tree${i - 1}`)]);
      await sh(tool('fstrim')!, [v.mnt]);
    }
  })();
  await Promise.all([fio, copies]);
  // Unmounted, the filesystem writes nothing more (its journal checkpointed, lazy inode-table init
  // stopped): the replica can then be compared with the device, and mounted as a clean filesystem.
  run('umount', v.mnt);
  await lab.waitConverged(Date.now(), 180_000);

  const applied = (await lab.logLines('mt')).filter((l) => l.msg === 'differential applied' && Number(l.time) > startedAt);
  const crash = applied.filter((l) => l.consistency === 'CRASH').map((l) => Number(l.seq));
  t.ok(crash.length >= 10, `${crash.length} CRASH points during the workload`);
  // Up to 12 points spread over the run.
  const step = Math.max(1, Math.floor(crash.length / 12));
  let checked = 0;
  for (let i = 0; i < crash.length; i += step) {
    const snap = path.join(v.mtSnapshots, `vol1-${String(crash[i]).padStart(10, '0')}.img`);
    if (!fs.existsSync(snap)) continue;
    const r = await fsckClean(snap);
    t.ok(r.clean, `point ${crash[i]}: e2fsck clean after journal replay`, { output: r.clean ? undefined : r.output.slice(0, 2000) });
    checked++;
  }
  t.ok(checked >= 10, `${checked} points checked`);
  const stats = ((await lab.status('agent'))!.volumes as Array<Record<string, unknown>>)[0]!.trackerStats as Record<string, number>;
  t.comment(`trackerStats ${JSON.stringify(stats)}`);
  t.equal(stats.drops! + stats.userDrops!, 0, 'no drops');
  const same = (await sha256(v.replica)) === (await sha256(v.dev));
  t.ok(same, 'the replica equals the source');
  if (!same) {
    const [a, b] = [fs.readFileSync(v.replica), fs.readFileSync(v.image)];
    const bad: number[] = [];
    for (let i = 0; i < a.length; i += 4096) if (!a.subarray(i, i + 4096).equals(b.subarray(i, i + 4096))) bad.push(i / 4096);
    t.comment(`${bad.length} differing blocks: ${bad.slice(0, 30).join(', ')}`);
  }
});
