// `tidemark demo`: replicate a generated ext4 volume through all three daemons while writing to it,
// then prove the replica equals the source.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, promises as fsp, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Lab, TIDEMARK_BIN } from '../lab/lab.js';

export interface DemoOptions {
  dir?: string;
  seconds?: number;
  sizeMiB?: number;
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Text that compresses like logs and documents do, and bytes that do not compress at all. */
function textFile(bytes: number, seed: number): Buffer {
  const words = ['replica', 'volume', 'block', 'journal', 'sequence', 'checksum', 'tidemark', 'extent', 'durable', 'the', 'of', 'and'];
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const line = `${new Date(1.7e12 + (seed * 1000 + i) * 1000).toISOString()} INFO ${words[(i * 7 + seed) % words.length]} ${words[(i * 3) % words.length]} id=${(i * 2654435761 + seed) >>> 0}\n`;
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

/** A populated ext4 image: mkfs.ext4 -d copies a folder into the new filesystem without mounting it. */
async function makeVolume(dir: string, image: string, sizeMiB: number): Promise<void> {
  const tree = path.join(dir, 'tree');
  await fsp.mkdir(path.join(tree, 'logs'), { recursive: true });
  await fsp.mkdir(path.join(tree, 'data'), { recursive: true });
  const budget = Math.floor(sizeMiB * 0.35) << 20;
  let used = 0;
  for (let i = 0; used < budget; i++) {
    const size = (256 << 10) + ((i * 7919) % 8) * (256 << 10);
    const data = i % 3 === 2 ? randomBytes(size) : textFile(size, i);
    await fsp.writeFile(path.join(tree, i % 3 === 2 ? 'data' : 'logs', `file-${i}.${i % 3 === 2 ? 'bin' : 'log'}`), data);
    used += size;
  }
  execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0', '-d', tree, image, `${sizeMiB}M`], { stdio: 'pipe' });
  await fsp.rm(tree, { recursive: true, force: true });
}

/** Change the live filesystem the way a user would: new files, deleted files. debugfs keeps ext4 valid. */
function writeSome(image: string, scratch: string, round: number): number {
  const size = (64 << 10) + ((round * 104729) % 32) * (64 << 10);
  const data = round % 2 === 0 ? textFile(size, round + 1000) : randomBytes(size);
  writeFileSync(scratch, data); // synchronous: debugfs reads it right after
  const cmds = [`write ${scratch} /logs/live-${round}.dat`];
  if (round >= 6) cmds.push(`rm /logs/live-${round - 6}.dat`);
  for (const c of cmds) spawnSync('debugfs', ['-w', '-R', c, image], { stdio: 'ignore' });
  return size;
}

const mib = (n: number): string => (n / 1048576).toFixed(1);

export async function runDemo(opts: DemoOptions): Promise<void> {
  const dir = path.resolve(opts.dir ?? path.join(os.tmpdir(), 'tidemark-demo'));
  const seconds = opts.seconds ?? 30;
  const sizeMiB = opts.sizeMiB ?? 256;
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  console.log(`Tidemark demo in ${dir}`);
  console.log(`generating a ${sizeMiB} MiB ext4 volume with files (text and incompressible data) and free space...`);
  await makeVolume(dir, source, sizeMiB);
  // The demo's writer is the application: at each point the agent's pre script asks it to hold still
  // (file Q) and waits until it is between writes (file W gone), so every point is app-consistent; the
  // master target keeps them all in its retention log.
  const hold = { pre: `touch ${dir}/Q; while [ -e ${dir}/W ]; do sleep 0.02; done`, post: `rm -f ${dir}/Q`, tag: 'demo', timeoutMs: 30_000 };
  const lab = await Lab.create({
    dir,
    volumes: [{ id: 'demo-vol', source, replica, agent: { capture: 'script', script: hold }, mt: { retention: { window: '24h' } } }],
    agent: { cycleIntervalMs: 1000 },
  });
  console.log('PKI and configs written; starting master target, process server and agent');
  // Ctrl-C (or a SIGTERM) stops the daemons too, instead of leaving them running without their parent.
  const interrupt = (sig: NodeJS.Signals): void => {
    console.log(`\n${sig}: stopping the daemons`);
    void lab.stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  let ok = false;
  try {
    const t0 = Date.now();
    let written = 0;
    let round = 0;
    const doneAt: number[] = []; // when each round of writes finished
    const scratch = path.join(dir, 'scratch.dat');
    console.log(`writing to the source for ${seconds} s while it replicates:`);
    while (Date.now() - t0 < seconds * 1000) {
      writeFileSync(path.join(dir, 'W'), ''); // between here and the rm below, a write may be under way
      if (!existsSync(path.join(dir, 'Q'))) {
        written += writeSome(source, scratch, round++);
        doneAt.push(Date.now());
      }
      rmSync(path.join(dir, 'W'), { force: true });
      await new Promise((r) => setTimeout(r, 500));
      if (round % 2 === 0) await progress(lab, Date.now() - t0, written);
    }
    const stoppedAt = Date.now();
    console.log('writes stopped; waiting for the replica to converge...');
    await lab.waitConverged(stoppedAt, 300_000, async () => {
      if (Date.now() % 2000 < 250) await progress(lab, Date.now() - t0, written);
    });
    await progress(lab, Date.now() - t0, written);
    const [a, b] = [await sha256File(source), await sha256File(replica)];
    console.log(`source  sha256 ${a}`);
    console.log(`replica sha256 ${b}`);
    ok = a === b;
    const fsck = spawnSync('e2fsck', ['-fn', replica], { encoding: 'utf8' });
    if (fsck.status !== null) console.log(`e2fsck -fn on the replica: ${fsck.status === 0 ? 'clean' : `exit ${fsck.status}`}`);
    console.log(ok ? `REPLICA MATCHES SOURCE after ${((Date.now() - t0) / 1000).toFixed(1)} s` : 'REPLICA DIFFERS FROM SOURCE');
    ok = recoverAPoint(lab, dir, t0, doneAt) && ok;
  } finally {
    await lab.stopAll();
    console.log(`daemons stopped cleanly; logs in ${dir}/*.log`);
  }
  if (!ok) process.exitCode = 1;
}

async function progress(lab: Lab, elapsedMs: number, written: number): Promise<void> {
  const [a, p, m] = [await lab.status('agent'), await lab.status('ps'), await lab.status('mt')];
  const av = (a?.volumes as Record<string, number>[] | undefined)?.[0];
  const pv = (p?.volumes as Record<string, number>[] | undefined)?.[0];
  const mv = (m?.volumes as Record<string, number>[] | undefined)?.[0];
  const ratio = pv?.storedBytesIn ? ((pv.rawBytesIn ?? 0) / pv.storedBytesIn).toFixed(2) : "-";
  console.log(
    `  t=${(elapsedMs / 1000).toFixed(0).padStart(3)}s written ${mib(written).padStart(6)} MiB | replicated ${mib(mv?.appliedBytes ?? 0).padStart(7)} MiB` +
      ` | backlog agent ${mib(av?.journalBytes ?? 0)} / ps ${mib(pv?.backlogBytes ?? 0)} / mt ${mib(mv?.backlogBytes ?? 0)} MiB` +
      ` | seq ${av?.lastSeq ?? '-'}→${mv?.appliedSeq ?? '-'} | lag ${((mv?.lagMs ?? 0) / 1000).toFixed(1)} s | lz4 ${ratio}x`,
  );
}

/** Which demo files exist after `rounds` rounds of writeSome: the last six live-N.dat. */
function liveFilesAfter(rounds: number): string[] {
  const out: string[] = [];
  for (let i = Math.max(0, rounds - 6); i < rounds; i++) out.push(`live-${i}.dat`);
  return out;
}

/**
 * Recover a point from the middle of the run out of the master target's retention log and prove it: the
 * image is a clean ext4 holding exactly the files written before the point, byte for byte.
 */
function recoverAPoint(lab: Lab, dir: string, t0: number, doneAt: number[]): boolean {
  const tm = (...args: string[]): string => execFileSync(process.execPath, [TIDEMARK_BIN, ...args, '--config', lab.configs.mt], { cwd: dir, encoding: 'utf8' });
  const { points } = JSON.parse(tm('points', 'demo-vol', '--json')) as { points: Array<{ seq: number; atMs: number; tags: string[] }> };
  const during = points.filter((p) => p.atMs > t0 && doneAt.some((d) => d < p.atMs));
  const point = during[Math.floor(during.length / 2)];
  if (!point) {
    console.log(`no recovery point was made during the writes (${points.length} retained): POINT NOT VERIFIED`);
    return false;
  }
  const out = path.join(dir, 'recovered.img');
  const rounds = doneAt.filter((d) => d < point.atMs).length;
  console.log(`${points.length} recovery points retained; recovering #${point.seq} (app-consistent '${point.tags.join(',')}', ${((point.atMs - t0) / 1000).toFixed(1)} s into the run, after ${rounds} rounds of writes):`);
  console.log(`  ${tm('recover', 'demo-vol', '--seq', String(point.seq), '--out', out).trim()}`);
  const fsck = spawnSync('e2fsck', ['-fn', out], { encoding: 'utf8' });
  const listed = spawnSync('debugfs', ['-R', 'ls -p /logs', out], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split('/')[5]).filter((n): n is string => !!n && n.startsWith('live-'));
  const expected = liveFilesAfter(rounds);
  const sameFiles = JSON.stringify([...listed].sort()) === JSON.stringify([...expected].sort());
  // Even rounds wrote text that can be made again: compare one such file byte for byte.
  const even = expected.map((n) => Number(n.slice(5, -4))).filter((r) => r % 2 === 0).at(-1);
  let sameBytes = true;
  if (even !== undefined) {
    const dumped = path.join(dir, 'dumped.dat');
    spawnSync('debugfs', ['-R', `dump /logs/live-${even}.dat ${dumped}`, out], { stdio: 'ignore' });
    const size = (64 << 10) + ((even * 104729) % 32) * (64 << 10);
    sameBytes = existsSync(dumped) && readFileSync(dumped).equals(textFile(size, even + 1000));
  }
  console.log(`  e2fsck -fn: ${fsck.status === 0 ? 'clean' : `exit ${fsck.status}`}; files: ${listed.length ? `${listed.sort().join(' ')}` : 'none'} (expected ${expected.join(' ') || 'none'})${even !== undefined ? `; live-${even}.dat ${sameBytes ? 'byte-exact' : 'DIFFERS'}` : ''}`);
  const ok = fsck.status === 0 && sameFiles && sameBytes;
  console.log(ok ? `POINT #${point.seq} VERIFIED: the volume as it was ${((Date.now() - point.atMs) / 1000).toFixed(0)} s ago` : `POINT #${point.seq} DOES NOT MATCH`);
  return ok;
}
