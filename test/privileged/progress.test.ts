// Progress of the long commands (resync, verify, recover), as an operator sees it off a terminal: plain
// lines on stderr with bytes, rate and ETA, ending at 100%; the result alone on stdout; nothing at all
// but the JSON document with --json. The recovered bytes are checked against the point's clone.
import { execFile } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, sha256, waitFor } from '../integration/helpers.js';
import { makeXfs, privileged, tempDir } from './require-root.js';

interface Run { code: number; stdout: string; stderr: string }

function tm(lab: Lab, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, ...args], { cwd: lab.opts.dir, maxBuffer: 16 << 20 }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
}

const LINE = (label: string): RegExp => new RegExp(`^${label} \\d+\\.\\d% [\\d.]+ (B|KiB|MiB|GiB)? ?(of|0 of) [\\d.]+ MiB, [\\d.]+ ?(B|KiB|MiB|GiB)?/s, ETA (\\d+[smh]|\\?)`);

t.test('resync, verify and recover show progress on stderr, none with --json', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const xfs = makeXfs(t, 1500).mnt;
  const source = path.join(xfs, 'source.img');
  const clones = path.join(xfs, 'clones');
  await makeImage(source, 256, 192);
  const lab = await Lab.create({
    dir: tempDir(t),
    recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica: path.join(xfs, 'replica.img'), agent: { capture: 'reflink', reflink: { dir: clones, keep: 100 } }, mt: { retention: { window: '1h' } } }],
    agent: { cycleIntervalMs: 300 },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 180_000);

  const rs = await tm(lab, 'resync', 'vol1', '--wait', '--config', lab.configs.agent);
  t.equal(rs.code, 0, `resync --wait: ${rs.stderr}`);
  const lines = rs.stderr.split('\n').filter(Boolean);
  t.ok(lines.length >= 1 && lines.every((l) => LINE('resync vol1').test(l)), `each progress line has bytes, rate and ETA:\n${rs.stderr}`);
  t.match(lines.at(-1), /^resync vol1 100\.0% 256\.0 MiB of 256\.0 MiB/, 'the last line says the pass is complete');
  t.match(rs.stdout, /^resync of vol1 done in [\d.]+ s: 256\.0 MiB compared, 0 block\(s\) differed/, 'the result on stdout');
  const rsj = await tm(lab, 'resync', 'vol1', '--wait', '--json', '--config', lab.configs.agent);
  t.equal(rsj.stderr, '', 'resync --wait --json: nothing on stderr');
  t.equal((JSON.parse(rsj.stdout) as { bytesCompared: number }).bytesCompared, 256 << 20, 'and the document on stdout');

  const v = await tm(lab, 'verify', 'vol1', '--config', lab.configs.agent);
  t.equal(v.code, 0);
  t.match(v.stderr.split('\n').filter(Boolean).at(-1), /^verify vol1 100\.0% 256\.0 MiB of 256\.0 MiB, .*\/s, ETA 0s/, 'verify: progress ends at 100%');
  t.match(v.stdout, /^verify of vol1: 256\.0 MiB compared, 0 block\(s\) differ/);

  // A point to recover: a write, then its clone (the point's exact bytes) on the replica's side.
  let points: Array<{ seq: number }> = [];
  await waitFor(async () => {
    const p = await tm(lab, 'points', 'vol1', '--json', '--config', lab.configs.mt);
    points = (JSON.parse(p.stdout) as { points: Array<{ seq: number }> }).points;
    return points.length > 0;
  }, 60_000, 'a recovery point');
  const seq = points.at(-1)!.seq;
  const out = path.join(xfs, 'recovered.img');
  // A copy with a full verify: long enough to be seen by the poll of the master target's status.
  const r = await tm(lab, 'recover', 'vol1', '--seq', String(seq), '--out', out, '--copy', '--verify', 'full', '--config', lab.configs.mt);
  t.equal(r.code, 0, `recover: ${r.stderr}`);
  const rl = r.stderr.split('\n').filter(Boolean);
  t.ok(rl.length >= 1 && rl.every((l) => /^recover vol1 \d+\.\d% .* of .*, .*\/s, ETA \S+ (copying the replica|rolling back to the point|verifying every block)$/.test(l)), `recover: progress lines name the phase:\n${r.stderr}`);
  t.match(rl.at(-1), /^recover vol1 100\.0% /, 'recover: the last phase complete');
  t.equal(await sha256(out), await sha256(path.join(clones, `vol1-${String(seq).padStart(10, '0')}.img`)), `recovered bytes equal point #${seq}'s clone`);
  const rj = await tm(lab, 'recover', 'vol1', '--seq', String(seq), '--out', path.join(xfs, 'recovered2.img'), '--copy', '--verify', 'full', '--json', '--config', lab.configs.mt);
  t.equal(rj.code, 0);
  t.equal(rj.stderr, '', 'recover --json: nothing on stderr');
  t.equal((JSON.parse(rj.stdout) as { point: { seq: number } }).point.seq, seq, 'and the result document on stdout');

  // points filters, through the real command line (issue 15 B): the newest, by class, by time.
  const pj = async (...f: string[]): Promise<{ points: Array<{ seq: number; consistency: string }>; retained: number }> => JSON.parse((await tm(lab, 'points', 'vol1', '--json', '--config', lab.configs.mt, ...f)).stdout) as { points: Array<{ seq: number; consistency: string }>; retained: number };
  const every = await pj();
  t.ok(every.points.length >= 1 && every.retained === every.points.length, 'no filter: every retained point');
  t.same((await pj('--limit', '1')).points.map((p) => p.seq), [every.points.at(-1)!.seq], '--limit 1: the newest');
  t.same((await pj('--class', 'app')).points, [], '--class app: reflink capture makes crash points only');
  t.same((await pj('--class', 'crash', '--since', '1h ago', '--until', String(Date.now() + 60_000))).points.map((p) => p.seq), every.points.filter((p) => p.consistency === 'CRASH').map((p) => p.seq), 'crash points of the last hour');
  const bad = await tm(lab, 'points', 'vol1', '--class', 'fuzzy', '--config', lab.configs.mt);
  t.equal(bad.code, 64, '--class fuzzy: usage error');
  t.match(bad.stderr, /TM_ERR_USAGE: --class must be crash or app/);
  const future = await tm(lab, 'recover', 'vol1', '--at', new Date(Date.now() + 3_600_000).toISOString(), '--out', path.join(xfs, 'future.img'), '--config', lab.configs.mt);
  t.equal(future.code, 64, 'a future --at is a usage error, not the latest point');
  t.match(future.stderr, /is in the future/);
});
