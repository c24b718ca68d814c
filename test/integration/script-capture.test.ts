// App-consistent points by an application that quiesces itself (capture "script", no root, an image
// file on any filesystem), kept by the master target's retention log and recovered: each recovered point
// equals the copy the pre script took of the volume while the application was held.
import { execFile } from 'node:child_process';
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, scratchDir, sha256, sleep } from './helpers.js';
import { Rng } from '../seed.js';

const rng = new Rng('script-capture');

const execFileP = promisify(execFile);
const SIZE = 16 << 20;

/** Writes random blocks unless asked to hold (file Q); says it is mid-write with file W (the pre script waits for it). */
function quiescingWriter(image: string, dir: string): { stop(): Promise<number> } {
  const Q = path.join(dir, 'Q');
  const W = path.join(dir, 'W');
  let running = true;
  let rounds = 0;
  const loop = (async () => {
    const fd = fs.openSync(image, 'r+');
    try {
      while (running) {
        fs.writeFileSync(W, ''); // mid-write from here...
        if (!fs.existsSync(Q)) {
          for (let i = 0; i < 8; i++) {
            const len = rng.int(1, 9) * 4096;
            fs.writeSync(fd, rng.bytes(len), 0, len, rng.int(0, (SIZE - len) / 4096) * 4096);
          }
          fs.fsyncSync(fd);
          rounds++;
        }
        fs.rmSync(W, { force: true }); // ...to here
        await sleep(30);
      }
    } finally {
      fs.closeSync(fd);
    }
  })();
  return { async stop() { running = false; await loop; return rounds; } };
}

t.test('script capture: points taken while the application holds still, recovered exactly from retention', async (t) => {
  const dir = await scratchDir(t, 'script');
  const source = path.join(dir, 'source.img');
  const copies = path.join(dir, 'copies');
  await fsp.mkdir(copies);
  await makeImage(source, SIZE >> 20, SIZE >> 20);
  // Hold the writer, then copy the volume as it is at this point (named by the time, in ns).
  const pre = `touch ${dir}/Q; while [ -e ${dir}/W ]; do sleep 0.02; done; cp ${source} ${copies}/$(date +%s%N).img`;
  const lab = await Lab.create({
    dir,
    volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img'), agent: { capture: 'script', script: { pre, post: `rm -f ${dir}/Q`, tag: 'app-held', timeoutMs: 5000 } }, mt: { retention: { window: '1h' } } }],
    agent: { cycleIntervalMs: 500 },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  const writer = quiescingWriter(source, dir);
  await sleep(15_000);
  const rounds = await writer.stop();
  await lab.waitConverged(Date.now(), 120_000);
  t.ok(rounds > 20, `the application wrote ${rounds} rounds, held at each point`);

  const r = await execFileP(process.execPath, [TIDEMARK_BIN, 'points', 'vol1', '--json', '--config', lab.configs.mt], { cwd: dir });
  const points = (JSON.parse(r.stdout) as { points: Array<{ seq: number; atMs: number; consistency: string; tags: string[] }> }).points;
  t.ok(points.length >= 8, `${points.length} app-consistent points retained`);
  t.ok(points.every((p) => p.consistency === 'APP' && p.tags.includes('app-held')), 'each tagged app-held');
  const taken = (await fsp.readdir(copies)).map((n) => Number(n.slice(0, -4).slice(0, 13))).sort((a, b) => a - b); // ns -> ms
  const copyOf = (atMs: number): string => {
    const ms = taken.filter((x) => x <= atMs).at(-1)!;
    return path.join(copies, (fs.readdirSync(copies).find((n) => n.startsWith(String(ms))))!);
  };
  const picks = [points[0]!, points[Math.floor(points.length / 3)]!, points[Math.floor((2 * points.length) / 3)]!, points.at(-2)!, points.at(-1)!];
  for (const p of picks) {
    const out = path.join(dir, `recovered-${p.seq}.img`);
    await execFileP(process.execPath, [TIDEMARK_BIN, 'recover', 'vol1', '--seq', String(p.seq), '--out', out, '--config', lab.configs.mt], { cwd: dir });
    t.equal(await sha256(out), await sha256(copyOf(p.atMs)), `point #${p.seq} recovered equals the volume as the pre script found it`);
  }
  t.equal(await sha256(path.join(dir, 'replica.img')), await sha256(source), 'the replica equals the source');

  // A replica damaged behind the master target's back: a fully verified recovery refuses to hand it out.
  await lab.stop('mt');
  const at = rng.int(0, SIZE);
  const fh = await fsp.open(path.join(dir, 'replica.img'), 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] = b[0]! ^ 0x10;
  await fh.write(b, 0, 1, at);
  await fh.close();
  const out = path.join(dir, 'recovered-damaged.img');
  const refused = await execFileP(process.execPath, [TIDEMARK_BIN, 'recover', 'vol1', '--latest', '--verify', 'full', '--out', out, '--config', lab.configs.mt], { cwd: dir })
    .then((r) => ({ code: 0, err: r.stderr }), (e: { code: number; stderr: string }) => ({ code: e.code, err: e.stderr }));
  t.not(refused.code, 0, 'recover --verify full fails');
  t.match(refused.err, /TM_ERR_RECOVERY_VERIFY/, 'with TM_ERR_RECOVERY_VERIFY');
  t.match(refused.err, `block ${Math.floor(at / 4096)} (offset ${Math.floor(at / 4096) * 4096})`, 'naming the damaged block');
  t.notOk(fs.existsSync(out), 'and leaves no output behind');
});
