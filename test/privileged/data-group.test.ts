// A consistency group in data mode (tracker "data", capture "freeze" on every member): two ext4
// filesystems, "data" and "log", each on a loop device over an image on one XFS. A "database" writes
// record N to data and fsyncs, then appends "N committed" to log and fsyncs. Each cut runs every pre
// script, freezes both, puts a marker in each member's write stream, thaws both and runs the post scripts;
// each member's part of the cut is its stream up to its marker. On the master target both volumes'
// differentials of a cut carry the same cg: tag and the freeze tag (APP); the two replica snapshots of
// each group point agree (every commit in the log has its record in the data: a cut taken on the two
// streams at different instants would show commits without records), each is a clean ext4 with no journal
// to replay (frozen when cut), and at the end the replicas equal the sources. The applications are held
// for milliseconds: nothing is read while frozen.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { dataPinName } from '../../agent/trackers/data.js';
import { Lab } from '../../lab/lab.js';
import { ensureBpffs } from '../../native/datacap.js';
import { parseGroupTag } from '../../proto/group-tag.js';
import { fsckClean, sh, sha256, sleep } from './protected.js';
import { attachLoop, makeXfs, privileged, run, tempDir, tool } from './require-root.js';

const REC = 4096;
const SIZE_MIB = 64;

interface Disk { id: string; dev: string; mnt: string; replica: string }

function disk(t: Test, xfs: string, id: string): Disk {
  const image = path.join(xfs, `${id}.img`);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, SIZE_MIB * 2 ** 20);
  const dev = attachLoop(t, image);
  run('mkfs.ext4', '-q', '-F', '-b', '4096', dev);
  const mnt = fs.mkdtempSync(path.join(tempDir(t), `${id}-`));
  run('mount', dev, mnt);
  t.teardown(() => {
    try { run('fsfreeze', '-u', mnt); } catch { /* not frozen */ }
    try { run('umount', mnt); } catch { try { run('umount', '-l', mnt); } catch { /* gone */ } }
  });
  return { id, dev, mnt, replica: path.join(xfs, `${id}-replica.img`) };
}

const WORKLOAD = `
const fs = require('fs');
const [dataDir, logDir, ms] = process.argv.slice(1);
const d = fs.openSync(dataDir + '/records', 'a'), l = fs.openSync(logDir + '/commits', 'a');
const end = Date.now() + Number(ms);
let n = 0;
for (; Date.now() < end; n++) {
  const rec = Buffer.alloc(${REC});
  rec.write('record ' + n + '\\n');
  fs.writeSync(d, rec); fs.fsyncSync(d);
  fs.writeSync(l, n + ' committed\\n'); fs.fsyncSync(l);
}
console.log(n);
`;

async function catFile(image: string, file: string): Promise<Buffer> {
  const copy = `${image}.cat`;
  await sh('cp', ['--reflink=always', image, copy]);
  try {
    await sh(tool('e2fsck')!, ['-E', 'journal_only', '-y', copy]).catch(() => {});
    return (await sh(tool('debugfs')!, ['-R', `cat ${file}`, copy], { encoding: 'buffer', maxBuffer: 256 << 20 })).stdout;
  } finally {
    fs.rmSync(copy, { force: true });
  }
}

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

interface Applied { seq: number; consistency: string; tags: string[] }

async function applied(l: Lab, sinceMs = 0): Promise<Record<string, Applied[]>> {
  const out: Record<string, Applied[]> = {};
  for (const line of await l.logLines('mt')) {
    if (line.msg !== 'differential applied' || Number(line.time) < sinceMs) continue;
    (out[String(line.volume)] ??= []).push({ seq: Number(line.seq), consistency: String(line.consistency), tags: (line.tags as string[] | undefined) ?? [] });
  }
  return out;
}

t.test('data mode: a group cut is a marker in each member\'s stream placed while all are frozen', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'e2fsck', 'debugfs', 'dumpe2fs', 'fsfreeze'])) return;
  const xfs = makeXfs(t, 500).mnt;
  const disks = [disk(t, xfs, 'data'), disk(t, xfs, 'log')];
  const trail = path.join(xfs, 'scripts.log');
  const freeze = (d: Disk): Record<string, unknown> => ({ mountpoint: d.mnt, pre: `echo "pre ${d.id}" >> ${trail}`, post: `echo "post ${d.id}" >> ${trail}`, timeoutMs: 5000, tag: 'db-app' });
  const l = await Lab.create({
    dir: tempDir(t),
    recoveryRoots: [xfs],
    volumes: disks.map((d) => ({ id: d.id, source: d.dev, replica: d.replica, agent: { tracker: 'data', capture: 'freeze', freeze: freeze(d) }, mt: { snapshots: { dir: path.join(xfs, 'mt-snapshots'), keep: 100000 }, retention: { window: '1h' } } })),
    agent: { cycleIntervalMs: 500, data: { ringMiB: 64, queueMiB: 256, fifoPriority: 1 }, groups: [{ name: 'db', volumes: disks.map((d) => d.id) }] },
  });
  t.teardown(async () => {
    await l.stopAll();
    for (const d of disks) fs.rmSync(path.join(ensureBpffs(), dataPinName(path.join(l.opts.dir, 'agent-state', 'volumes', d.id))), { recursive: true, force: true });
  });
  l.start('mt');
  l.start('ps');
  l.start('agent');
  for (let i = 0; i < 240; i++) {
    const a = (await l.status('agent'))?.volumes as Array<Record<string, unknown>> | undefined;
    const m = (await l.status('mt'))?.volumes as Array<Record<string, unknown>> | undefined;
    if (a?.length === 2 && a.every((v) => v.consistentAfterResync === true) && m?.length === 2 && m.every((v) => v.lastCrashPoint || v.lastAppPoint)) break;
    await sleep(500);
  }
  fs.writeFileSync(trail, '');
  const since = Date.now();
  const wl = spawn(process.execPath, ['-e', WORKLOAD, disks[0]!.mnt, disks[1]!.mnt, '10000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  wl.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  const code = await new Promise<number | null>((resolve) => wl.once('exit', resolve));
  t.equal(code, 0, `the workload ran (${out.trim()} records)`);
  // Let the last cuts reach the master target.
  await sleep(3000);

  const byTag = new Map<string, Record<string, Applied>>();
  for (const [volume, diffs] of Object.entries(await applied(l, since))) {
    for (const d of diffs) for (const tag of d.tags) if (parseGroupTag(tag)) byTag.set(tag, { ...byTag.get(tag), [volume]: d });
  }
  const complete = [...byTag].filter(([, v]) => v.data && v.log);
  t.ok(complete.length >= 4, `${complete.length} group points reached the master target on both volumes (${byTag.size} cuts tagged)`);
  t.ok(complete.every(([, v]) => v.data!.consistency === 'APP' && v.log!.consistency === 'APP' && v.data!.tags.includes('db-app') && v.log!.tags.includes('db-app')), 'each is app-consistent on both, with the freeze tag');
  const crashTagged = Object.values(await applied(l, since)).flat().filter((d) => d.consistency !== 'APP' && d.tags.some((x) => x.startsWith('cg:')));
  t.strictSame(crashTagged, [], 'no differential outside a cut carries a group tag');

  const lines = fs.readFileSync(trail, 'utf8').split('\n').filter(Boolean);
  const cuts: string[][] = [];
  for (let i = lines.indexOf('pre data'); i >= 0 && i + 4 <= lines.length; i += 4) cuts.push(lines.slice(i, i + 4));
  t.strictSame(cuts.filter((c) => c.join() !== 'pre data,pre log,post data,post log'), [], `each of ${cuts.length} cuts runs every pre script, then freezes, then every post script`);

  const snap = (id: string, seq: number): string => path.join(xfs, 'mt-snapshots', `${id}-${String(seq).padStart(10, '0')}.img`);
  let claimed = 0;
  let compared = 0;
  for (const [tag, v] of complete) {
    const r = await mismatch(snap('data', v.data!.seq), snap('log', v.log!.seq));
    t.strictSame(r.missing, [], `${tag}: every one of the ${r.committed} commits in the log has its record in the data`);
    claimed = Math.max(claimed, r.committed);
    compared++;
    for (const id of ['data', 'log'] as const) {
      const features = (await sh(tool('dumpe2fs')!, ['-h', snap(id, v[id]!.seq)])).stdout;
      t.notMatch(features, /needs_recovery/, `${tag}: ${id} has no journal to replay (frozen when cut)`);
    }
  }
  t.ok(compared >= 4 && claimed > 0, `${compared} group points compared, up to ${claimed} commits each`);
  const [lastTag, last] = complete.at(-1)!;
  for (const id of ['data', 'log'] as const) {
    const f = await fsckClean(snap(id, last[id]!.seq));
    t.ok(f.clean, `${lastTag}: ${id} snapshot passes e2fsck -fn`, { output: f.output.slice(-2000) });
  }

  const g = ((await l.status('agent'))?.groups as Array<Record<string, unknown>> | undefined)?.[0];
  t.equal(g?.failures, 0, 'no cut failed');
  t.ok(Number(g?.points) >= 4, `status: ${g?.points} group points`);
  // Two FIFREEZEs and two FITHAWs, nothing read in between: bounded well under a read-while-frozen cut.
  t.ok(Number(g?.maxFrozenMs) <= 1000, `applications held ${g?.lastFrozenMs} ms by the last cut, ${g?.maxFrozenMs} ms at most`);
  const lost = (await l.logLines('agent')).filter((x) => x.code === 'TM_ERR_TRACKING_LOST' || x.code === 'TM_ERR_CAPTURE');
  t.strictSame(lost.map((x) => x.err), [], 'no tracking loss and no capture error');

  // Idle now: no cut, as nothing is written (the freezes' own superblock writes do not call for more).
  await sleep(3000);
  const cuts0 = Number(((await l.status('agent'))?.groups as Array<Record<string, unknown>>)[0]!.cuts);
  await sleep(4000);
  const cuts1 = Number(((await l.status('agent'))?.groups as Array<Record<string, unknown>>)[0]!.cuts);
  t.equal(cuts1, cuts0, `an idle group is not frozen (${cuts0} cuts, then none in 4 s)`);

  // The replicas end equal to the devices (unmounted: every buffer written out).
  await sh('sync', []);
  for (const d of disks) {
    for (let i = 0; ; i++) {
      try {
        run('umount', d.mnt);
        break;
      } catch (e) {
        if (i > 40) throw e;
        await sleep(100);
      }
    }
  }
  await l.waitConverged(Date.now(), 120_000);
  for (const d of disks) t.equal(await sha256(d.replica), (await sh('sh', ['-c', `dd if=${d.dev} iflag=direct bs=1M status=none | sha256sum`])).stdout.split(' ')[0], `${d.id}: replica equals the source device`);
});
