// Consistency groups: two ext4 filesystems, "data" and "log", each on a loop device over an image on one XFS.
// 1. capture reflink: a "database" writes record N to data and fsyncs, then appends "N committed" to log and
//    fsyncs. The agent cuts both at one instant (freeze both, clone both images, thaw); points larger than
//    one differential span several. On the master target both volumes' differentials of a cut carry the
//    same cg: tag, the two replica snapshots of each group point agree (every record the log calls committed
//    is in the data), and at the end the replicas equal the sources.
// 2. capture freeze: every pre script runs before any filesystem is frozen, both volumes get APP points with
//    the same tag, and a hung pre script makes the cycle fuzzy for both with no filesystem left frozen.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { parseGroupTag } from '../../proto/group-tag.js';
import { fsckClean, sh, sha256, sleep } from './protected.js';
import { attachLoop, makeXfs, pgrep, privileged, run, tempDir, tool } from './require-root.js';

const REC = 4096;
const SIZE_MIB = 64;

interface Disk {
  id: string;
  dev: string;
  mnt: string;
  replica: string;
}

/** ext4 on a loop device over `<id>.img` on `xfs`, mounted; undone after the test. */
function disk(t: Test, xfs: string, id: string): Disk {
  const image = path.join(xfs, `${id}.img`);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, SIZE_MIB * 2 ** 20);
  const dev = attachLoop(t, image);
  run('mkfs.ext4', '-q', '-F', dev);
  const mnt = fs.mkdtempSync(path.join(tempDir(t), `${id}-`));
  run('mount', dev, mnt);
  t.teardown(() => {
    try { run('fsfreeze', '-u', mnt); } catch { /* not frozen */ }
    try { run('umount', mnt); } catch { try { run('umount', '-l', mnt); } catch { /* gone */ } }
  });
  return { id, dev, mnt, replica: path.join(xfs, `${id}-replica.img`) };
}

/** The database: record, fsync, commit line, fsync; now and then a 3 MiB rewrite of a bulk file on one side. */
const WORKLOAD = `
const fs = require('fs'), crypto = require('crypto');
const [dataDir, logDir, ms] = process.argv.slice(1);
const d = fs.openSync(dataDir + '/records', 'a'), l = fs.openSync(logDir + '/commits', 'a');
const bulk = Buffer.alloc(3 << 20), end = Date.now() + Number(ms);
let n = 0;
for (; Date.now() < end; n++) {
  const rec = Buffer.alloc(${REC});
  rec.write('record ' + n + '\\n');
  fs.writeSync(d, rec); fs.fsyncSync(d);
  fs.writeSync(l, n + ' committed\\n'); fs.fsyncSync(l);
  if (n % 150 === 75) { crypto.randomFillSync(bulk); fs.writeFileSync((n % 300 < 150 ? dataDir : logDir) + '/bulk', bulk); }
}
console.log(n);
`;

/**
 * A file's bytes inside an ext4 image, read without mounting it. The journal is replayed first, on a
 * throwaway reflink copy (as a mount would): a crash image's latest metadata may be only in the journal.
 */
async function catFile(image: string, file: string): Promise<Buffer> {
  const copy = `${image}.cat`;
  await sh('cp', ['--reflink=always', image, copy]);
  try {
    await sh(tool('e2fsck')!, ['-E', 'journal_only', '-y', copy]).catch(() => {});
    const { stdout } = await sh(tool('debugfs')!, ['-R', `cat ${file}`, copy], { encoding: 'buffer', maxBuffer: 256 << 20 });
    return stdout;
  } finally {
    fs.rmSync(copy, { force: true });
  }
}

/**
 * sha256 of what the device holds, read past the page cache: a filesystem remounted read-only may keep a
 * block (the ext4 journal's superblock) changed in memory and never written; the replica has what was.
 */
async function deviceSha256(dev: string): Promise<string> {
  const { stdout } = await sh('sh', ['-c', `dd if=${dev} iflag=direct bs=1M status=none | sha256sum`], { maxBuffer: 1 << 20 });
  return stdout.split(' ')[0]!;
}

/** Commits the log claims that the data does not hold (empty: the two agree), and how many it claims. */
async function mismatch(dataImage: string, logImage: string): Promise<{ committed: number; missing: number[] }> {
  const data = await catFile(dataImage, '/records');
  const lines = (await catFile(logImage, '/commits')).toString('utf8').split('\n').filter(Boolean);
  const missing: number[] = [];
  for (const line of lines) {
    const n = Number(line.split(' ')[0]);
    const rec = data.subarray(n * REC, (n + 1) * REC);
    if (rec.length < REC || !rec.toString('utf8').startsWith(`record ${n}\n`)) missing.push(n);
  }
  return { committed: lines.length, missing };
}

/** Remount read-only (a freeze becomes a no-op) or unmount, once no cut holds the filesystem frozen. */
async function quiesce(d: Disk, how: 'ro' | 'umount'): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      if (how === 'ro') run('mount', '-o', 'remount,ro', d.mnt);
      else run('umount', d.mnt);
      return;
    } catch (e) {
      if (i > 40) throw e;
      await sleep(100); // frozen by a cut at that moment
    }
  }
}

/**
 * Stop the writes, wait for convergence, and compare each replica with what its device holds. `ro`: the
 * group keeps cutting (a freeze of a read-only filesystem is a no-op). `umount`: every filesystem buffer
 * is written out first; needed where the agent reads the live device (capture freeze), as a mounted ext4
 * keeps its journal's superblock changed in memory, and pinned there, without writing it.
 */
async function replicasEqual(t: Test, l: Lab, disks: Disk[], how: 'ro' | 'umount'): Promise<void> {
  await sh('sync', []);
  for (const d of disks) await quiesce(d, how);
  await l.waitConverged(Date.now(), 120_000);
  for (const d of disks) {
    const same = t.equal(await sha256(d.replica), await deviceSha256(d.dev), `${d.id}: replica equals the source device`);
    if (!same) t.comment('differing 4 KiB blocks (count, block):', (await sh('sh', ['-c', `cmp -l ${d.replica} ${d.dev} | awk '{print int(($1-1)/4096)}' | uniq -c | head -20`])).stdout);
  }
}

/** The lab replicating `disks` as group "db", each volume with `agentVolume(disk)`; started. */
async function groupLab(t: Test, xfs: string, disks: Disk[], agentVolume: (d: Disk) => Record<string, unknown>): Promise<Lab> {
  const l = await Lab.create({
    dir: tempDir(t),
    recoveryRoots: [xfs],
    volumes: disks.map((d) => ({ id: d.id, source: d.dev, replica: d.replica, agent: agentVolume(d), mt: { snapshots: { dir: path.join(xfs, 'mt-snapshots'), keep: 100000 }, retention: { window: '1h' } } })),
    // Small differentials: points larger than one are read from their clones over several.
    agent: { cycleIntervalMs: 500, maxDiffBytes: 1024 * 1024, groups: [{ name: 'db', volumes: disks.map((d) => d.id) }] },
  });
  t.teardown(() => l.stopAll());
  l.start('mt');
  l.start('ps');
  l.start('agent');
  // A freeze writes the ext4 superblock, so a group on mounted ext4 is never idle: wait for the initial
  // resyncs to end and a first point on each side instead of for convergence.
  for (let i = 0; i < 240; i++) {
    const a = (await l.status('agent'))?.volumes as Array<Record<string, unknown>> | undefined;
    const m = (await l.status('mt'))?.volumes as Array<Record<string, unknown>> | undefined;
    if (a?.length === 2 && a.every((v) => v.consistentAfterResync === true) && m?.every((v) => v.lastCrashPoint || v.lastAppPoint)) break;
    await sleep(500);
  }
  return l;
}

interface Applied {
  seq: number;
  consistency: string;
  tags: string[];
}

/** The differentials the master target applied, per volume, in order. */
async function applied(l: Lab, sinceMs = 0): Promise<Record<string, Applied[]>> {
  const out: Record<string, Applied[]> = {};
  for (const line of await l.logLines('mt')) {
    if (line.msg !== 'differential applied' || Number(line.time) < sinceMs) continue;
    (out[String(line.volume)] ??= []).push({ seq: Number(line.seq), consistency: String(line.consistency), tags: (line.tags as string[] | undefined) ?? [] });
  }
  return out;
}

/** Group tags among them: tag -> volume -> the differential carrying it. */
function groupTags(byVolume: Record<string, Applied[]>): Map<string, Record<string, Applied>> {
  const byTag = new Map<string, Record<string, Applied>>();
  for (const [volume, diffs] of Object.entries(byVolume)) {
    for (const d of diffs) for (const tag of d.tags) if (parseGroupTag(tag)) byTag.set(tag, { ...byTag.get(tag), [volume]: d });
  }
  return byTag;
}

async function agentGroup(l: Lab): Promise<Record<string, unknown> | undefined> {
  return ((await l.status('agent'))?.groups as Array<Record<string, unknown>> | undefined)?.[0];
}

t.test('capture reflink: one instant across two volumes, group points that agree with each other', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'e2fsck', 'debugfs', 'fsfreeze'])) return;
  const xfs = makeXfs(t, 600).mnt;
  const disks = [disk(t, xfs, 'data'), disk(t, xfs, 'log')];
  const l = await groupLab(t, xfs, disks, (d) => ({ tracker: 'blocktrace', capture: 'reflink', freeze: { mountpoint: d.mnt } }));

  const wl = spawn(process.execPath, ['-e', WORKLOAD, disks[0]!.mnt, disks[1]!.mnt, '8000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  wl.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  const code = await new Promise<number | null>((resolve) => wl.once('exit', resolve));
  t.equal(code, 0, `the workload ran (${out.trim()} records)`);
  await replicasEqual(t, l, disks, 'ro');

  // What the master target applied: both volumes' differentials of a cut carry its tag.
  const diffs = await applied(l);
  const byTag = groupTags(diffs);
  const wrong = [...byTag.keys()].filter((tag) => parseGroupTag(tag)?.group !== 'db' || parseGroupTag(tag)?.members !== 2);
  t.strictSame(wrong, [], 'every group tag names group "db" of two members');
  const complete = [...byTag].filter(([, v]) => v.data && v.log);
  t.ok(complete.length >= 5, `${complete.length} group points reached the master target on both volumes (${byTag.size} cuts tagged)`);
  t.ok(complete.every(([, v]) => v.data!.consistency === 'CRASH' && v.log!.consistency === 'CRASH'), 'each is a crash-consistent point on both');

  // A point spanning several differentials carries its tag on the last one, with a FUZZY part just before.
  let spanned = 0;
  for (const list of Object.values(diffs)) {
    const first = list.findIndex((d) => d.consistency === 'CRASH');
    for (let i = Math.max(1, first + 1); i < list.length; i++) if (list[i]!.tags.some((x) => x.startsWith('cg:')) && list[i - 1]!.consistency === 'FUZZY') spanned++;
  }
  t.ok(spanned > 0, `${spanned} tagged differentials completed points that spanned several`);

  // The two replica snapshots of each group point agree with each other.
  const snap = (id: string, seq: number): string => path.join(xfs, 'mt-snapshots', `${id}-${String(seq).padStart(10, '0')}.img`);
  const step = Math.max(1, Math.floor(complete.length / 8));
  let compared = 0;
  let claimed = 0;
  for (let i = complete.length - 1; i >= 0; i -= step) {
    const [tag, v] = complete[i]!;
    const r = await mismatch(snap('data', v.data!.seq), snap('log', v.log!.seq));
    t.strictSame(r.missing, [], `${tag}: every one of the ${r.committed} commits in the log has its record in the data`);
    claimed = Math.max(claimed, r.committed);
    compared++;
  }
  t.ok(compared >= 5 && claimed > 0, `${compared} group points compared, up to ${claimed} commits each`);
  const [lastTag, last] = complete.at(-1)!;
  for (const id of ['data', 'log'] as const) {
    const f = await fsckClean(snap(id, last[id]!.seq));
    t.ok(f.clean, `${lastTag}: ${id} snapshot passes e2fsck -fn`, { output: f.output.slice(-2000) });
  }

  // The whole group recovers to one cut from the master target's retention logs: each member equals the
  // replica snapshot of its point of that cut, and the two agree with each other.
  const tm = (...args: string[]): Promise<string> => sh(process.execPath, [TIDEMARK_BIN, ...args, '--config', l.configs.mt], { cwd: l.opts.dir, maxBuffer: 16 << 20 }).then((r) => r.stdout);
  const groupPts = (JSON.parse(await tm('points', '--group', 'db', '--json')) as { points: Array<{ tag: string; members: Array<{ volume: string; seq: number }> }> }).points;
  t.ok(groupPts.length >= 3, `${groupPts.length} complete group points retained`);
  const pick = groupPts[Math.floor(groupPts.length / 2)]!;
  const outDir = path.join(xfs, 'group-recovered');
  await tm('recover', '--group', 'db', '--tag', pick.tag, '--out-dir', outDir);
  for (const m of pick.members) {
    t.equal(await sha256(path.join(outDir, `${m.volume}.img`)), await sha256(snap(m.volume, m.seq)), `group recovery to ${pick.tag}: ${m.volume} equals its point #${m.seq}`);
  }
  const rg = await mismatch(path.join(outDir, 'data.img'), path.join(outDir, 'log.img'));
  t.strictSame(rg.missing, [], `the recovered pair is consistent: all ${rg.committed} commits in the log have their record in the data`);

  // The agent's view: the group, its last complete point, no failed cut.
  const g = await agentGroup(l);
  t.equal(g?.name, 'db');
  t.equal(g?.failures, 0, 'no cut failed');
  t.comment(`applications held ${g?.lastFrozenMs} ms by the last cut, ${g?.maxFrozenMs} ms at most (freeze both, clone both, thaw both)`);
  const lp = g?.lastPoint as { tag: string; seqs: Record<string, number> } | null;
  t.ok(lp && lp.seqs.data !== undefined && lp.seqs.log !== undefined, 'status: the last group point with the seq of each member', { lastPoint: lp });
});

t.test('capture freeze: every pre script before any freeze, APP group points, a hung script cut off', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'fsfreeze', 'pgrep'])) return;
  const xfs = makeXfs(t, 400).mnt;
  const disks = [disk(t, xfs, 'data'), disk(t, xfs, 'log')];
  const [data, log] = disks as [Disk, Disk];
  const trail = path.join(xfs, 'scripts.log');
  // The log's pre script writes to the data filesystem: it would hang if data were frozen before it ran.
  // (Once data is read-only, at the end, that write fails and the script goes on.)
  const touch = path.join(data.mnt, 'from-log-pre');
  const pre: Record<string, string> = { data: `echo "pre data" >> ${trail}`, log: `{ echo x > ${touch} && sync ${touch}; } 2>/dev/null; echo "pre log" >> ${trail}` };
  const freeze = (d: Disk): Record<string, unknown> => ({ mountpoint: d.mnt, pre: pre[d.id], post: `echo "post $TIDEMARK_VOLUME" >> ${trail}`, timeoutMs: 5000, tag: 'db-app' });
  const l = await groupLab(t, xfs, disks, (d) => ({ tracker: 'blocktrace', capture: 'freeze', freeze: freeze(d) }));
  // The initial resync ran each member's scripts on its own, window by window; from here on only cuts do.
  fs.writeFileSync(trail, '');
  const since = Date.now();
  fs.writeFileSync(path.join(log.mnt, 'commits'), 'x'.repeat(100000));
  await sh('sync', []);
  let complete: Array<[string, Record<string, Applied>]> = [];
  for (let i = 0; i < 60 && complete.length < 2; i++) {
    complete = [...groupTags(await applied(l, since))].filter(([, v]) => v.data && v.log);
    await sleep(500);
  }
  t.ok(complete.length >= 2, `${complete.length} group points on both volumes`);
  t.ok(complete.every(([, v]) => v.data!.consistency === 'APP' && v.log!.consistency === 'APP' && v.data!.tags.includes('db-app') && v.log!.tags.includes('db-app')), 'app-consistent on both, with the freeze tag');
  const lines = fs.readFileSync(trail, 'utf8').split('\n').filter(Boolean);
  const cuts: string[][] = [];
  for (let i = lines.indexOf('pre data'); i >= 0 && i + 4 <= lines.length; i += 4) cuts.push(lines.slice(i, i + 4));
  t.ok(cuts.length >= 2, `${cuts.length} cuts ran their scripts`);
  t.strictSame(cuts.filter((c) => c.join() !== 'pre data,pre log,post data,post log'), [], 'each cut runs every pre script, then freezes, then every post script');
  t.ok(fs.existsSync(touch), "the log's pre script wrote to the data filesystem: it was not frozen yet");

  // Now the log's pre script hangs: the group's bound (the smallest timeoutMs) cuts it off.
  await l.stop('agent');
  const cfg = JSON.parse(fs.readFileSync(l.configs.agent, 'utf8')) as { volumes: Array<Record<string, unknown>> };
  cfg.volumes[1]!.freeze = { ...freeze(log), pre: 'sleep 600', timeoutMs: 1500 };
  fs.writeFileSync(l.configs.agent, JSON.stringify(cfg));
  const restarted = Date.now();
  l.start('agent');
  // Wait until two cycles have had the hung script cut off: then there were earlier scripts to kill.
  let cut: Record<string, unknown>[] = [];
  for (const end = Date.now() + 60_000; cut.length < 2 && Date.now() < end; await sleep(200)) {
    cut = (await l.logLines('agent')).filter((x) => x.code === 'TM_ERR_CAPTURE' && Number(x.time) >= restarted);
  }
  t.ok(cut.length >= 2, `the hung script was reported (TM_ERR_CAPTURE), in ${cut.length} cycles`);
  const wrote = sh('sh', ['-c', `echo more > ${data.mnt}/after && echo more > ${log.mnt}/after && sync`], { timeout: 10_000 });
  await t.resolves(wrote, 'writes to both filesystems complete: neither was left frozen');
  t.match(String(cut[0]?.err), /ran past \d+ ms and was killed/, 'as killed at the bound');
  t.equal(cut[0]?.msg, 'group point dropped; this cycle is fuzzy for every member');
  // (Differentials journaled before the restart may still arrive now: their cuts are older.)
  const after = await applied(l, restarted);
  t.strictSame([...groupTags(after).keys()].filter((tag) => parseGroupTag(tag)!.atMs >= restarted), [], 'no group point cut since');
  t.ok((after.data ?? []).some((d) => d.consistency === 'FUZZY'), 'data went on replicating, fuzzy');
  t.ok(pgrep('^sleep 600$').length <= 1, 'hung scripts of earlier cycles are gone');
  t.ok(Number((await agentGroup(l))?.failures) >= 1, 'status counts the failed cuts');
  // Unmounted, the group's freezes fail and each cycle reads the devices live: the replicas catch up.
  await replicasEqual(t, l, disks, 'umount');
});
