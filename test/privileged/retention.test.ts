// Retention end to end: random writes over hundreds of cycles, the agent keeping a reflink clone of every
// point it captures, the master target SIGKILLed again and again while it applies and compacts. Then at
// least 20 retained points, the oldest among them, are recovered and compared byte for byte with the
// agent's clone of that point; thinned points are refused. A test failover runs while replication goes
// on. Then the space cap: pause (apply stops, alert raised) and purge (oldest history goes, what is left
// still recovers exactly).
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, startWriter } from '../integration/helpers.js';
import { Rng } from '../seed.js';
import { makeXfs, privileged, tempDir } from './require-root.js';
import { sha256, sleep } from './protected.js';

const execFileP = promisify(execFile);
const SIZE_MIB = 16;

interface Point { seq: number; atMs: number; consistency: string; tags: string[] }

async function cli(lab: Lab, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  return execFileP(process.execPath, [TIDEMARK_BIN, ...args, '--config', lab.configs.mt], { cwd: lab.opts.dir, maxBuffer: 16 << 20 })
    .then((r) => ({ ok: true, out: r.stdout }), (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
}

async function mtVolume(lab: Lab): Promise<Record<string, unknown> | undefined> {
  return ((await lab.status('mt'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
}

async function listPoints(lab: Lab): Promise<Point[]> {
  const r = await cli(lab, 'points', 'vol1', '--json');
  if (!r.ok) throw new Error(`points failed: ${r.out}`);
  return (JSON.parse(r.out) as { points: Point[] }).points;
}

async function editMt(lab: Lab, retention: Record<string, unknown>): Promise<void> {
  const cfg = JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as { volumes: Array<Record<string, unknown>> };
  cfg.volumes[0]!.retention = retention;
  await fsp.writeFile(lab.configs.mt, JSON.stringify(cfg, null, 2));
}

t.test('retained points recover exactly through kills, compaction, thinning and the space cap', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const xfs = makeXfs(t, 1200).mnt;
  const source = path.join(xfs, 'source.img');
  const clones = path.join(xfs, 'clones');
  await makeImage(source, SIZE_MIB, SIZE_MIB);
  const retention = { window: '1h', tiers: [{ after: '30s', every: '4s' }], maintenanceIntervalMs: 700 };
  const lab = await Lab.create({
    dir: tempDir(t),
    recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica: path.join(xfs, 'replica.img'), agent: { capture: 'reflink', reflink: { dir: clones, keep: 5000 } }, mt: { retention } }],
    agent: { cycleIntervalMs: 300 },
  });
  t.teardown(() => lab.stopAll());
  const clonePath = (seq: number): string => path.join(clones, `vol1-${String(seq).padStart(10, '0')}.img`);
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);

  // Random writes; the master target killed every few seconds, mid-apply or mid-compaction.
  const rng = new Rng('retention');
  const writer = startWriter(source, SIZE_MIB << 20, 15);
  let kills = 0;
  let rehearsal: { seq: number; image: string } | null = null;
  const until = Date.now() + 65_000;
  while (Date.now() < until) {
    await sleep(rng.int(3000, 7000));
    if (!rehearsal && Date.now() > until - 30_000) {
      const r = await cli(lab, 'test-failover', 'start', 'vol1', '--json');
      t.ok(r.ok, `test failover started while replication runs ${r.ok ? '' : r.out}`);
      const j = JSON.parse(r.out) as { image: string; recovered: { point: Point } };
      rehearsal = { seq: j.recovered.point.seq, image: j.image };
      t.equal(await sha256(j.image), await sha256(clonePath(rehearsal.seq)), `rehearsal copy equals point #${rehearsal.seq}`);
      const fh = await fsp.open(j.image, 'r+');
      await fh.write(Buffer.alloc(65536, 0xab), 0, 65536, 1 << 20);
      await fh.close();
      continue;
    }
    await lab.kill('mt');
    kills++;
    await sleep(200);
    lab.start('mt');
  }
  await writer.stop();
  await lab.waitConverged(Date.now(), 180_000);
  const mtLog = await lab.logLines('mt');
  const compactions = mtLog.filter((l) => l.msg === 'retention: compacted').length;
  t.ok(kills >= 5, `the master target was SIGKILLed ${kills} times during apply and retention maintenance`);
  t.ok(compactions >= 3, `thinning compacted the log ${compactions} times`);

  // The rehearsal stayed at its point (but for what was written to it) while the replica moved on.
  t.ok(rehearsal, 'a rehearsal ran');
  const mv = await mtVolume(lab);
  t.ok(Number(mv?.appliedSeq) > rehearsal!.seq + 20, `replication went on: replica at #${String(mv?.appliedSeq)}, rehearsal at #${rehearsal!.seq}`);
  const expected = await fsp.readFile(clonePath(rehearsal!.seq));
  expected.fill(0xab, 1 << 20, (1 << 20) + 65536);
  t.ok((await fsp.readFile(rehearsal!.image)).equals(expected), 'the rehearsal copy is its point plus what the rehearsal wrote');
  const cleaned = await cli(lab, 'test-failover', 'cleanup', 'vol1');
  t.ok(cleaned.ok, 'cleanup is one command');
  t.notOk(await fsp.stat(rehearsal!.image).then(() => true, () => false), 'the rehearsal copy is gone');

  // Thinning goes on as points age: hold it (a policy that thins nothing more) so the points listed now
  // stay listed while they are recovered one by one.
  await lab.stop('mt');
  await editMt(lab, { ...retention, tiers: [{ after: '1h', every: '4s' }] });
  lab.start('mt');
  await lab.waitConverged(Date.now(), 60_000);

  // Recover at least 20 retained points, the oldest among them, and compare each with its clone.
  const points = await listPoints(lab);
  t.ok(points.length >= 25, `${points.length} points retained`);
  const kept = new Set(points.map((p) => p.seq));
  const picks = [points[0]!, points.at(-1)!, ...rng.shuffle(points.slice(1, -1)).slice(0, 20)];
  let exact = 0;
  for (const p of picks) {
    const out = path.join(xfs, `recovered-${p.seq}.img`);
    const r = await cli(lab, 'recover', 'vol1', '--seq', String(p.seq), '--out', out);
    if (!r.ok) {
      t.fail(`recover #${p.seq}: ${r.out}`);
      continue;
    }
    if ((await sha256(out)) === (await sha256(clonePath(p.seq)))) exact++;
    else t.fail(`point #${p.seq} recovered differs from the agent's clone of it`);
    await fsp.rm(out);
  }
  t.equal(exact, picks.length, `${exact} recovered points (oldest #${points[0]!.seq} included) equal their clones byte for byte`);
  // Points the agent made but thinning removed are refused with a clear error, and write nothing.
  const cloneSeqs = (await fsp.readdir(clones)).map((n) => /^vol1-(\d{10})\.img$/.exec(n)?.[1]).filter(Boolean).map(Number);
  const thinned = cloneSeqs.filter((s) => !kept.has(s) && s > points[0]!.seq).slice(0, 3);
  t.ok(thinned.length >= 1, `points removed by thinning: ${thinned.join(', ')}`);
  for (const s of thinned) {
    const out = path.join(xfs, `thinned-${s}.img`);
    const r = await cli(lab, 'recover', 'vol1', '--seq', String(s), '--out', out);
    t.notOk(r.ok, `thinned point #${s} refused`);
    t.match(r.out, /TM_ERR_POINT_NOT_FOUND/, 'with TM_ERR_POINT_NOT_FOUND');
    t.notOk(await fsp.stat(out).then(() => true, () => false), 'and no output');
  }
  // By time and with the full check, too.
  const mid = points[Math.floor(points.length / 2)]!;
  const byTime = path.join(xfs, 'by-time.img');
  const rt = await cli(lab, 'recover', 'vol1', '--at', new Date(mid.atMs).toISOString(), '--out', byTime, '--verify', 'full', '--json');
  t.ok(rt.ok, `recover --at ${new Date(mid.atMs).toISOString()} --verify full ${rt.ok ? '' : rt.out}`);
  t.equal(await sha256(byTime), await sha256(clonePath(mid.seq)), 'recover --at picks that point and it is exact');

  // Space cap, pause: apply stops (the pipeline holds the rest) and an alert is raised.
  const bytesNow = Number(((await mtVolume(lab))?.retention as { bytes: number }).bytes);
  await lab.stop('mt');
  await editMt(lab, { ...retention, tiers: [{ after: '1h', every: '4s' }], maxBytes: bytesNow + (2 << 20), onFull: 'pause' });
  lab.start('mt');
  const w2 = startWriter(source, SIZE_MIB << 20, 15);
  let paused: Record<string, unknown> | undefined;
  for (let i = 0; i < 120 && !paused; i++) {
    await sleep(500);
    const r = (await mtVolume(lab))?.retention as Record<string, unknown> | undefined;
    if (r?.paused) paused = r;
  }
  t.ok(paused, `pause mode: apply paused at the cap (${String(paused?.paused)})`);
  t.match(String(paused?.alert), /% of its/, 'and the 80% alert is raised');
  // With the writer still going, wait for a differential the master target holds and could apply: only
  // then does an unchanged applied sequence show that the pause holds them back.
  const stuck = Number((await mtVolume(lab))?.appliedSeq);
  let stored = stuck;
  for (let i = 0; i < 120 && stored <= stuck; i++) {
    await sleep(250);
    stored = Number((await mtVolume(lab))?.storedSeq);
  }
  await w2.stop();
  t.ok(stored > stuck, `a differential waits to be applied (stored #${stored}, applied #${stuck})`);
  t.equal(Number((await mtVolume(lab))?.appliedSeq), stuck, 'nothing is applied while paused');
  t.ok((await lab.logLines('mt')).some((l) => l.code === 'TM_ERR_RETENTION_FULL'), 'TM_ERR_RETENTION_FULL logged');

  // Purge: the oldest history goes until the log fits; what is left still recovers exactly.
  await lab.stop('mt');
  const cap = Math.floor(bytesNow / 2);
  await editMt(lab, { ...retention, maxBytes: cap, onFull: 'purge' });
  lab.start('mt');
  await lab.waitConverged(Date.now(), 180_000);
  let r3: Record<string, unknown> | undefined;
  for (let i = 0; i < 40; i++) {
    r3 = (await mtVolume(lab))?.retention as Record<string, unknown> | undefined;
    if (r3 && Number(r3.bytes) <= cap && Number(r3.purgedSegments) > 0) break;
    await sleep(500);
  }
  t.ok(Number(r3?.bytes) <= cap, `purge mode: retention log ${String(r3?.bytes)} bytes, within the ${cap}-byte cap`);
  const after = await listPoints(lab);
  t.ok(after[0]!.seq > points[0]!.seq, `the oldest points were purged (oldest now #${after[0]!.seq}, was #${points[0]!.seq})`);
  const oldest = after[0]!;
  const out = path.join(xfs, 'after-purge.img');
  const r4 = await cli(lab, 'recover', 'vol1', '--seq', String(oldest.seq), '--out', out);
  t.ok(r4.ok, `the oldest point left (#${oldest.seq}) recovers ${r4.ok ? '' : r4.out}`);
  t.equal(await sha256(out), await sha256(clonePath(oldest.seq)), 'exactly');
  t.equal(await sha256(path.join(xfs, 'replica.img')), await sha256(source), 'and the replica equals the source');
});
