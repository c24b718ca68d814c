// Data mode on a partition: the programs count every write request of the whole disk (they see the
// disk's request queue), so the block-layer count the agent checks them against must be the disk's too.
// With the partition's own stat (the defect), writes to the other partitions were counted by the
// programs and not by the stat, and cancelled requests the programs had missed: a miss went unreported.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DataCapture, ensureBpffs } from '../../native/datacap.js';
import { blockDeviceInfo } from '../../common/device.js';
import { dataPinName, statFileOf } from '../../agent/trackers/data.js';
import { Lab } from '../../lab/lab.js';
import { sha256 } from '../integration/helpers.js';
import { makeImage, privileged, run, tempDir } from './require-root.js';
import { sh } from './protected.js';

const MiB = 2 ** 20;

const writesIn = (statFile: string): number => Number(fs.readFileSync(statFile, 'utf8').trim().split(/\s+/)[4]);

/** A 64 MiB loop disk with two 24 MiB partitions; their device paths. */
async function partitionedDisk(t: Parameters<typeof makeImage>[0]): Promise<{ dev: string; p1: string; p2: string }> {
  const img = makeImage(t, 64);
  execFileSync('sfdisk', ['-q', img], { input: 'label: dos\nsize=24MiB\nsize=24MiB\n' });
  const dev = run('losetup', '--find', '--show', img);
  t.teardown(() => { try { run('losetup', '-d', dev); } catch { /* gone */ } });
  // The partitions told to the kernel (BLKPG) unless a scan already found them.
  if (!fs.existsSync(`/sys/class/block/${path.basename(dev)}p1`)) run('partx', '-a', dev);
  // Without udev (a container) the kernel makes the partitions but no /dev nodes: make them from sysfs.
  const nodes = tempDir(t);
  const [p1, p2] = await Promise.all([1, 2].map(async (n) => {
    const sys = `/sys/class/block/${path.basename(dev)}p${n}/dev`;
    for (let i = 0; i < 50 && !fs.existsSync(sys); i++) await new Promise((r) => setTimeout(r, 100));
    if (fs.existsSync(`${dev}p${n}`)) return `${dev}p${n}`;
    const [maj, min] = fs.readFileSync(sys, 'utf8').trim().split(':');
    run('mknod', path.join(nodes, `p${n}`), 'b', maj!, min!);
    return path.join(nodes, `p${n}`);
  })) as [string, string];
  return { dev, p1, p2 };
}

t.test('a partition volume is checked against the counts of the disk the programs see', async (t) => {
  if (!privileged(t, ['sfdisk', 'fio', 'bpftool'])) return;
  const { dev, p1, p2 } = await partitionedDisk(t);
  const info = (await blockDeviceInfo(p1))!;
  t.equal(info.diskName, path.basename(dev), 'the volume is a partition of the loop disk');
  t.ok(info.startSector > 0, 'starting past the partition table');

  const pinDir = path.join(ensureBpffs(), `tm-test-part-${process.pid}`);
  t.teardown(() => fs.rmSync(pinDir, { recursive: true, force: true }));
  const [major, minor] = fs.readFileSync(`/sys/class/block/${info.diskName}/dev`, 'utf8').trim().split(':').map(Number) as [number, number];
  const cap = DataCapture.open(p1, { pinDir, major, minor, startByte: info.startSector * 512, endByte: info.endSector * 512, deviceStartByte: info.startSector * 512, chunkShift: 12, ringBytes: 16 * MiB, maxQueueBytes: 64 * MiB, fifoPriority: 0, resume: false });
  t.teardown(() => cap.close(true));

  // Writes to the other partition only: outside the volume, but on the disk the programs watch.
  const statFile = statFileOf(info);
  const ownStat = `/sys/class/block/${info.name}/stat`;
  const s0 = writesIn(statFile);
  const own0 = writesIn(ownStat);
  const c0 = cap.stats().statWrites;
  await sh('fio', ['--name=w', `--filename=${p2}`, '--size=16m', '--rw=randwrite', '--bs=4k', '--direct=1', '--ioengine=psync', '--io_size=4m', '--randseed=7']);
  await sh('sync', []);
  const stat = writesIn(statFile) - s0;
  const programs = cap.stats().statWrites - c0;
  t.ok(programs >= 1000, `the programs counted the other partition's ${programs} write requests`);
  t.equal(stat, programs, 'and the counts the agent checks them against are the same ones');
  t.equal(writesIn(ownStat) - own0, 0, "the partition's own stat counted none of them: it cannot be the reference");
});

t.test('data mode protects a partition end to end: calibrated on it, replica equal, neighbours untouched', async (t) => {
  if (!privileged(t, ['sfdisk', 'fio', 'bpftool'])) return;
  const { p1, p2 } = await partitionedDisk(t);
  const dir = tempDir(t);
  const replica = path.join(dir, 'replica.img');
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source: p1, replica, agent: { tracker: 'data', capture: 'none' } }], agent: { cycleIntervalMs: 500, data: { ringMiB: 16, queueMiB: 64, fifoPriority: 0 } } });
  t.teardown(async () => {
    await lab.stopAll();
    fs.rmSync(path.join(ensureBpffs(), dataPinName(path.join(dir, 'agent-state', 'volumes', 'vol1'))), { recursive: true, force: true });
  });
  for (const d of ['mt', 'ps', 'agent'] as const) lab.start(d);
  await lab.waitConverged(Date.now(), 120_000);
  const started = (await lab.logLines('agent')).map((l) => String(l.msg));
  t.notOk(started.some((m) => /could not start|calibration failed/.test(m)), 'the agent started data mode on the partition (it used to fail calibration)');
  // Writes to the volume and, at the same time, to the other partition of its disk.
  const fio = (target: string, seed: number): Promise<unknown> => sh('fio', ['--name=w', `--filename=${target}`, '--size=20m', '--rw=randwrite', '--bs=4k', '--direct=1', '--ioengine=psync', '--io_size=8m', `--randseed=${seed}`]);
  await Promise.all([fio(p1, 11), fio(p2, 12)]);
  const stoppedAt = Date.now();
  await lab.waitConverged(stoppedAt, 120_000);
  t.equal(await sha256(replica), await sha256(p1), 'the replica equals the partition');
  const lost = (await lab.logLines('agent')).filter((l) => l.code === 'TM_ERR_TRACKING_LOST');
  t.same(lost.map((l) => l.reason), [], "no write reported unseen (the neighbour's writes are counted on both sides)");
});
