// Kernel block tracking with reflink points, under a real workload on ext4, with the agent killed and
// restarted: every compared point on the replica equals the clone it was captured from, byte for byte,
// fsck is clean on each, no resync happens after the first, and fio's verify passes on the replica.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { privileged } from './require-root.js';
import { agentMessages, fsckClean, protectedVolume, protectLab, sh, sha256, sleep, TREE } from './protected.js';

// mulberry32: a small seeded generator, so a failing run's kill instants can be replayed.
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

t.test('blocktrace + reflink: points equal their clones; agent SIGKILLs need no resync', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'e2fsck', 'fio'])) return;
  const v = protectedVolume(t, 192);
  const lab = await protectLab(t, v,
    { tracker: 'blocktrace', capture: 'reflink', reflink: { dir: v.agentClones, keep: 100000 } },
    // Small differentials: points larger than one differential are read from their clone over several.
    { cycleIntervalMs: 500, maxDiffBytes: 2 * 1024 * 1024 },
    { snapshots: { dir: v.mtSnapshots, keep: 100000 } });
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  const resyncsAtStart = (await agentMessages(lab)).filter((m) => m === 'resync started').length;
  t.equal(resyncsAtStart, 1, 'one resync: the initial one');

  // Workload: fio random writes with verify headers, file copies and deletes.
  const fioJob = ['--name=w', '--size=48m', '--bs=4k', '--rw=randwrite', '--ioengine=psync', '--verify=crc32c', '--randseed=42', ];
  const fio = sh('fio', [...fioJob, `--directory=${v.mnt}`, '--fsync=16', '--rate_iops=1000', '--do_verify=0']);
  const copies = (async () => {
    for (let i = 0; i < 6; i++) {
      await sh('cp', ['-r', TREE, path.join(v.mnt, `copy${i}`)]);
      if (i >= 1) fs.rmSync(path.join(v.mnt, `copy${i - 1}`), { recursive: true, force: true });
      await sleep(300);
    }
  })();
  // The agent dies three times while that runs, at instants drawn from a printed seed.
  const seed = Number(process.env.TIDEMARK_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.comment(`seed ${seed} (replay with TIDEMARK_SEED=${seed})`);
  const random = seeded(seed);
  for (let k = 0; k < 3; k++) {
    await sleep(1500 + random() * 1500);
    await lab.kill('agent');
    await sleep(500);
    lab.start('agent');
  }
  await Promise.all([fio, copies]);
  await sh('sync', []);
  await sleep(1500);
  await lab.waitConverged(Date.now(), 120_000);
  const resyncs = (await agentMessages(lab)).filter((m) => m === 'resync started').length;
  t.equal(resyncs, 1, 'no resync after three SIGKILLs of the agent: events waited in the kernel');

  // How many points a loaded machine captures in the workload's time varies: keep writing (small bursts,
  // each followed by convergence) until at least five points exist on both sides, then compare them.
  const pointsOnBoth = (): string[] => fs.readdirSync(v.mtSnapshots).filter((n) => n.endsWith('.img')).sort()
    .filter((n) => fs.existsSync(path.join(v.agentClones, n)));
  for (let burst = 0; pointsOnBoth().length < 5 && burst < 20; burst++) {
    await sh('dd', ['if=/dev/urandom', `of=${path.join(v.mnt, `burst${burst % 4}`)}`, 'bs=1M', 'count=2', 'conv=fsync']);
    await sleep(1000);
    await lab.waitConverged(Date.now(), 120_000);
  }
  // Every point the master target snapshotted equals the clone the agent captured it from.
  const both = pointsOnBoth();
  t.ok(both.length >= 5, `${both.length} points captured during the workload`);
  const step = Math.max(1, Math.floor(both.length / 12));
  let compared = 0;
  for (let i = both.length - 1; i >= 0; i -= step) {
    const n = both[i]!;
    const [a, b] = [await sha256(path.join(v.agentClones, n)), await sha256(path.join(v.mtSnapshots, n))];
    t.equal(b, a, `point ${n}: replica equals the clone`);
    const f = await fsckClean(path.join(v.mtSnapshots, n));
    t.ok(f.clean, `point ${n}: e2fsck -fn clean`, { output: f.output.slice(-2000) });
    compared++;
  }
  t.ok(compared >= 5, `${compared} points compared`);
  // With 2 MiB differentials, points larger than that were read from their clone over several (fuzzy
  // until the last); those points are among the ones compared above.
  const applied = (await lab.logLines('mt')).filter((l) => l.msg === 'differential applied');
  const firstPoint = applied.findIndex((l) => l.consistency === 'CRASH');
  const spanning = applied.slice(firstPoint).filter((l) => l.consistency === 'FUZZY').length;
  t.ok(spanning > 0, `${spanning} differentials were parts of points spanning several`);

  // Unmount cleanly; once converged the replica is the device, and fio verifies on it.
  await sh('umount', [v.mnt]);
  await sleep(1500);
  await lab.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(v.replica), await sha256(v.dev), 'replica equals the source device');
  // fio opens its files read-write even to verify: check a reflink copy, so the replica stays untouched.
  const copy = path.join(v.xfs, 'replica-verify.img');
  await sh('cp', ['--reflink=always', v.replica, copy]);
  const { stdout: loop } = await sh('losetup', ['-f', '--show', copy]);
  const rmnt = fs.mkdtempSync(path.join(v.xfs, 'rmnt-'));
  try {
    await sh('mount', [loop.trim(), rmnt]);
    try {
      const r = await sh('fio', [...fioJob, `--directory=${rmnt}`, '--verify_only']).then(() => 0, (e: { code?: number; stderr?: string }) => { t.comment(e.stderr ?? ''); return e.code ?? 1; });
      t.equal(r, 0, "fio's verify passes on the replica");
    } finally {
      await sh('umount', [rmnt]);
    }
  } finally {
    await sh('losetup', ['-d', loop.trim()]);
  }
  await sh('mount', [v.dev, v.mnt]); // for the teardown's umount
});
