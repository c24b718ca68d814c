// Checksum resync onto a seeded replica: a source image of random data and a replica that is a copy of
// it with 1% or 10% of its 4 KiB blocks overwritten, at 1 GiB and 4 GiB. Tidemark brings the replica in
// step (the master target adopts the existing file as a seed and the agent's initial resync sends only
// what differs); measured next to rsync --inplace --no-whole-file (default block size and 4096) over
// its daemon protocol on loopback, and rdiff signature / delta / patch, in the same run on the same files.
import { execFileSync, spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { promises as fsp, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freePort, Lab, type DaemonName } from '../lab/lab.js';
import { CpuMeter, cpuSecondsTree, fmt, GiB, MiB, which, WORK_DIR, type BenchResult, type Benchmark, type Figure, type Ratio, type Reference, benchSizeMiB, nameProfiles } from './harness.js';
import { sha256File } from './volume.js';

const VOLUME_ID = 'bench-vol';
const BLOCK = 4096;
const CYCLE_INTERVAL_MS = 500;
const PERCENTS = [1, 10] as const;
const TARGET_WALL_VS_RSYNC = 0.5;
const TARGET_DATA_VS_CHANGED = 1.2;
const CONVERGE_TIMEOUT_MS = 60 * 60_000;
/** MB in the table and the issue is 10^6 bytes. */
const MB = 1e6;

export const resync: Benchmark = {
  description: 'checksum resync of 1 GiB and 4 GiB random images with 1% and 10% of 4 KiB blocks changed (seeded replica), vs rsync --inplace --no-whole-file (default and --block-size=4096, daemon on loopback) and rdiff',
  run,
};


function requireTools(): void {
  const pkg: Record<string, string> = { rsync: 'rsync', rdiff: 'rdiff', bash: 'bash', cp: 'coreutils' };
  const missing = Object.keys(pkg).filter((t) => which(t) === null);
  if (missing.length > 0) {
    throw new Error(`resync needs ${missing.join(', ')} on PATH for its references (Debian packages: ${missing.map((t) => pkg[t]).join(', ')}); install them (apt-get install -y rsync rdiff) and run again`);
  }
}

function version(cmd: string, arg: string): string {
  try {
    return /\d+\.\d+\.\d+/.exec(execFileSync(cmd, [arg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))?.[0] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------------
// Test data: deterministic, fast (AES-256-CTR keystream over zeros).

function keystream(seed: string): (bytes: number) => Buffer {
  const key = createHash('sha256').update(`tidemark-bench-resync:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return (bytes) => cipher.update(Buffer.alloc(bytes));
}

async function writeRandom(file: string, bytes: number, seed: string): Promise<void> {
  const next = keystream(seed);
  const fh = await fsp.open(file, 'w');
  try {
    for (let off = 0; off < bytes; off += 4 * MiB) {
      const n = Math.min(4 * MiB, bytes - off);
      await fh.write(next(n), 0, n, off);
    }
  } finally {
    await fh.close();
  }
}

/** `count` distinct block indexes out of `blocks`, sorted, from a seeded generator (partial Fisher–Yates). */
function pickBlocks(blocks: number, count: number, seed: string): Uint32Array {
  const idx = new Uint32Array(blocks);
  for (let i = 0; i < blocks; i++) idx[i] = i;
  const rnd = keystream(`pick:${seed}`)(count * 8);
  for (let i = 0; i < count; i++) {
    // 48 random bits: unbiased enough for up to a few million blocks.
    const r = rnd.readUIntLE(i * 8, 6);
    const j = i + (r % (blocks - i));
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  return idx.slice(0, count).sort();
}

function cp(from: string, to: string): void {
  execFileSync('cp', ['--reflink=never', from, to], { stdio: 'pipe' });
}

/**
 * Write a freshly made file back to disk before anything is timed. Otherwise the first fsync of the
 * run (any file: ext4's ordered journal commits the newly allocated blocks with it) waits for gigabytes
 * of dirty page cache, a cost of preparing the benchmark rather than of the tool measured.
 */
async function flush(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The modified copy: `source` with these blocks overwritten by other random bytes. */
async function makeModified(source: string, file: string, blocks: Uint32Array, seed: string): Promise<void> {
  cp(source, file);
  const next = keystream(`data:${seed}`);
  const fh = await fsp.open(file, 'r+');
  try {
    const batch = 1024;
    for (let i = 0; i < blocks.length; i += batch) {
      const n = Math.min(batch, blocks.length - i);
      const data = next(n * BLOCK);
      for (let k = 0; k < n; k++) await fh.write(data, k * BLOCK, BLOCK, blocks[i + k]! * BLOCK);
    }
  } finally {
    await fh.close();
  }
  await flush(file);
}

/** A fresh working replica from the pristine modified copy, with an old mtime so rsync's quick check never skips it. */
async function restoreReplica(modified: string, replica: string): Promise<void> {
  await fsp.rm(replica, { force: true });
  cp(modified, replica);
  const old = new Date('2001-01-01T00:00:00Z');
  await fsp.utimes(replica, old, old);
  await flush(replica);
}

// ---------------------------------------------------------------------------------------------------
// Running a command: wall seconds and, through bash `times`, the CPU seconds of everything it ran.

interface Ran {
  seconds: number;
  cpuSeconds: number;
  stdout: string;
}

function secs(s: string): number {
  const m = /^(\d+)m([\d.]+)s$/.exec(s);
  return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
}

async function runTimed(argv: string[], label: string): Promise<Ran> {
  // `times` prints the shell's own user/sys, then its children's, each as "XmY.YYYs XmY.YYYs".
  const script = '"$@" > "$TM_OUT"; rc=$?; times >&2; exit $rc';
  const outFile = path.join(WORK_DIR, 'resync', `.${process.pid}.out`);
  const t0 = process.hrtime.bigint();
  const stderr = await new Promise<string>((resolve, reject) => {
    const p = spawn('bash', ['-c', script, label, ...argv], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TM_OUT: outFile, LC_ALL: 'C' } });
    let se = '';
    p.stderr.on('data', (d: Buffer) => (se += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(se) : reject(new Error(`${label} exited ${code}: ${se.trim().split('\n').slice(-8).join('\n')}`))));
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const lines = stderr.trim().split('\n');
  const timesLines = lines.slice(-2);
  const cpuSeconds = timesLines.map((l) => l.trim().split(/\s+/).map(secs).reduce((a, b) => a + b, 0)).reduce((a, b) => a + b, 0);
  const stdout = await fsp.readFile(outFile, 'utf8').catch(() => '');
  await fsp.rm(outFile, { force: true });
  return { seconds, cpuSeconds, stdout };
}

// ---------------------------------------------------------------------------------------------------
// rsync over its daemon protocol on loopback: real bytes on a real TCP connection, no SSH needed.

interface RsyncRun {
  setting: string;
  seconds: number;
  clientCpu: number;
  daemonCpu: number;
  bytesSent: number;
  bytesReceived: number;
  literal: number;
  matched: number;
  filesTransferred: number;
  equal: boolean;
}

function statNumber(stats: string, label: string): number {
  const m = new RegExp(`^${label}:\\s*([\\d,]+)`, 'm').exec(stats);
  return m ? Number(m[1]!.replace(/,/g, '')) : NaN;
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ')) if (t.trim()) out.push(Number(t));
  } catch {
    // gone
  }
  return out;
}

async function waitPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`rsync daemon did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function rsyncRun(dir: string, source: string, replica: string, blockSize: number | null, sourceSha: string): Promise<RsyncRun> {
  const conf = path.join(dir, 'rsyncd.conf');
  const root = process.getuid?.() === 0;
  await fsp.writeFile(
    conf,
    [
      `pid file = ${path.join(dir, 'rsyncd.pid')}`,
      `log file = ${path.join(dir, 'rsyncd.log')}`,
      'use chroot = no',
      ...(root ? ['uid = root', 'gid = root'] : []),
      '[bench]',
      `  path = ${path.dirname(replica)}`,
      '  read only = false',
      '',
    ].join('\n'),
  );
  await fsp.rm(path.join(dir, 'rsyncd.pid'), { force: true });
  const port = await freePort();
  const daemon = spawn('rsync', ['--daemon', '--no-detach', '--address', '127.0.0.1', '--port', String(port), '--config', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let daemonErr = '';
  daemon.stderr.on('data', (d: Buffer) => (daemonErr += d.toString()));
  const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
  try {
    await waitPort(port, 10_000).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}: ${daemonErr.trim()}`);
    });
    await waitChildrenGone(daemon.pid!);
    const before = cpuSecondsTree(daemon.pid!) ?? NaN;
    const setting = blockSize === null ? 'default block size' : `--block-size=${blockSize}`;
    const args = ['rsync', '--inplace', '--no-whole-file', ...(blockSize === null ? [] : [`--block-size=${blockSize}`]), '--stats', source, `rsync://127.0.0.1:${port}/bench/${path.basename(replica)}`];
    const r = await runTimed(args, `rsync ${setting}`);
    // The daemon forks a child per connection and reaps it: its CPU lands in the daemon's cutime/cstime.
    await waitChildrenGone(daemon.pid!);
    const after = cpuSecondsTree(daemon.pid!) ?? NaN;
    const res: RsyncRun = {
      setting,
      seconds: r.seconds,
      clientCpu: r.cpuSeconds,
      daemonCpu: after - before,
      bytesSent: statNumber(r.stdout, 'Total bytes sent'),
      bytesReceived: statNumber(r.stdout, 'Total bytes received'),
      literal: statNumber(r.stdout, 'Literal data'),
      matched: statNumber(r.stdout, 'Matched data'),
      filesTransferred: statNumber(r.stdout, 'Number of regular files transferred'),
      equal: (await sha256File(replica)) === sourceSha,
    };
    if (res.filesTransferred !== 1) throw new Error(`rsync ${setting} transferred ${res.filesTransferred} files, expected 1 (quick check skipped it?):\n${r.stdout}`);
    return res;
  } finally {
    if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGTERM');
    await exited;
  }
}

async function waitChildrenGone(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (childPids(pid).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

// ---------------------------------------------------------------------------------------------------
// rdiff: signature of the replica, delta of the source against it, patch the replica with it.

interface RdiffRun {
  sig: Ran;
  delta: Ran;
  patch: Ran;
  sigBytes: number;
  deltaBytes: number;
  equal: boolean;
}

async function rdiffRun(dir: string, source: string, basis: string, sourceSha: string): Promise<RdiffRun> {
  const sigFile = path.join(dir, 'rdiff.sig');
  const deltaFile = path.join(dir, 'rdiff.delta');
  const out = path.join(dir, 'rdiff-out.img');
  try {
    const sig = await runTimed(['rdiff', 'signature', basis, sigFile], 'rdiff signature');
    const delta = await runTimed(['rdiff', 'delta', sigFile, source, deltaFile], 'rdiff delta');
    const patch = await runTimed(['rdiff', 'patch', basis, deltaFile, out], 'rdiff patch');
    return {
      sig,
      delta,
      patch,
      sigBytes: (await fsp.stat(sigFile)).size,
      deltaBytes: (await fsp.stat(deltaFile)).size,
      equal: (await sha256File(out)) === sourceSha,
    };
  } finally {
    for (const f of [sigFile, deltaFile, out]) await fsp.rm(f, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------------
// Tidemark: a fresh lab whose master-target replica is the modified copy, adopted as a seed.

type Status = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const vol0 = (s: Status | null): Status | undefined => (s?.volumes as Status[] | undefined)?.[0];

/** TCP payload bytes per connection to a port, from `ss -ti` (bytes_acked / bytes_received), kept at their highest. */
class TcpCounter {
  private readonly conns = new Map<string, { sent: number; received: number }>();
  readonly available = which('ss') !== null;

  constructor(private readonly port: number) {}

  sample(): void {
    if (!this.available) return;
    let text: string;
    try {
      text = execFileSync('ss', ['-tinH', 'state', 'established', 'dport', '=', `:${this.port}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return;
    }
    let key: string | null = null;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      if (!/^\s/.test(line)) {
        // "0 0 127.0.0.1:41000 127.0.0.1:7410" (state column omitted with a state filter)
        const addrs = line.trim().split(/\s+/).filter((f) => f.includes(':'));
        key = addrs[0] ?? null;
        const info = line.slice(line.indexOf(addrs[1] ?? '') + (addrs[1] ?? '').length);
        if (/bytes_/.test(info)) this.take(key, info);
        continue;
      }
      if (key !== null) this.take(key, line);
    }
  }

  private take(key: string | null, info: string): void {
    if (key === null) return;
    const get = (k: string): number => {
      const m = new RegExp(`\\b${k}:(\\d+)`).exec(info);
      return m ? Number(m[1]) : NaN;
    };
    const sent = Number.isFinite(get('bytes_acked')) ? get('bytes_acked') : get('bytes_sent');
    const received = get('bytes_received');
    if (!Number.isFinite(sent) && !Number.isFinite(received)) return;
    const c = this.conns.get(key) ?? { sent: 0, received: 0 };
    if (Number.isFinite(sent)) c.sent = Math.max(c.sent, sent);
    if (Number.isFinite(received)) c.received = Math.max(c.received, received);
    this.conns.set(key, c);
  }

  totals(): { sent: number; received: number; connections: number } {
    let sent = 0;
    let received = 0;
    for (const c of this.conns.values()) {
      sent += c.sent;
      received += c.received;
    }
    return this.available && this.conns.size > 0 ? { sent, received, connections: this.conns.size } : { sent: NaN, received: NaN, connections: 0 };
  }
}

interface TidemarkRun {
  convergedSeconds: number;
  /** From starting the daemons until the agent's resync pass was seen complete. */
  resyncCompleteSeconds: number;
  /** The resync engine's own time: finishedAt − startedAt. */
  resyncEngineSeconds: number;
  /** Seconds from starting the daemons until the agent's resync started. */
  resyncStartSeconds: number;
  mtSeedHashSeconds: number;
  /** When the seed hashing finished, seconds from starting the daemons. */
  mtSeedHashedAtSeconds: number;
  bytesSent: number;
  hashBytes: number;
  differingBlocks: number;
  bytesProcessed: number;
  psBytesReceived: number;
  mtBytesReceived: number;
  agentTcp: { sent: number; received: number; connections: number };
  psTcp: { sent: number; received: number; connections: number };
  cpu: Record<DaemonName, number>;
  /** Minor page faults of each daemon, start to converged. */
  faults: Record<DaemonName, number>;
  equal: boolean;
}

async function checkAlive(lab: Lab, dir: string): Promise<void> {
  for (const [name, child] of lab.procs) {
    if (child.exitCode === null && child.signalCode === null) continue;
    const log = await fsp.readFile(path.join(dir, `${name}.log`), 'utf8').catch(() => '');
    throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before convergence; end of ${path.join(dir, `${name}.log`)}:\n${log.split('\n').slice(-15).join('\n')}`);
  }
}

const PRELOAD = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'cpu-prof-preload.js')).href;

async function tidemark(dir: string, source: string, replica: string, sourceSha: string): Promise<TidemarkRun> {
  await fsp.rm(dir, { recursive: true, force: true });
  const profDir = process.env.TIDEMARK_BENCH_CPU_PROF ? path.join(dir, 'profiles') : null;
  if (profDir) await fsp.mkdir(profDir, { recursive: true });
  const lab = await Lab.create({
    dir,
    volumes: [{ id: VOLUME_ID, source, replica }],
    agent: { cycleIntervalMs: CYCLE_INTERVAL_MS },
    ...(profDir ? { env: { NODE_OPTIONS: `--import=${PRELOAD}`, TIDEMARK_CPU_PROF_DIR: profDir } } : {}),
  });
  const pids = new Map<number, DaemonName>();
  const psPort = (JSON.parse(await fsp.readFile(lab.configs.agent, 'utf8')) as { processServer: { port: number } }).processServer.port;
  const mtPort = (JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as { masterTargets: Array<{ port: number }> }).masterTargets[0]!.port;
  const agentTcp = new TcpCounter(psPort);
  const psTcp = new TcpCounter(mtPort);
  const cpu = new CpuMeter();
  const t0ms = Date.now();
  const t0 = process.hrtime.bigint();
  const since = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  let resyncCompleteSeconds = NaN;
  let lastLog = 0;
  try {
    for (const n of ['mt', 'ps', 'agent'] as const) {
      const pid = lab.start(n).pid;
      cpu.watch(n, pid);
      if (pid !== undefined) pids.set(pid, n);
    }
    await lab.waitConverged(t0ms, CONVERGE_TIMEOUT_MS, async () => {
      cpu.sample();
      agentTcp.sample();
      psTcp.sample();
      await checkAlive(lab, dir);
      const a = vol0(await lab.status('agent'));
      const rs = a?.resync as Status | undefined;
      if (rs && rs.active === false && num(rs.finishedAt) > 0 && Number.isNaN(resyncCompleteSeconds)) resyncCompleteSeconds = since();
      if (since() - lastLog >= 5) {
        lastLog = since();
        console.log(`    t=${since().toFixed(0)}s resync ${String(rs?.percent ?? '-')}% sent ${fmt(num(rs?.bytesSent) / MB, 1)} MB`);
      }
    });
    const convergedSeconds = since();
    cpu.sample(); // right before SIGTERM: /proc/<pid> is gone once they exit
    agentTcp.sample();
    psTcp.sample();
    const status = { agent: await lab.status('agent'), ps: await lab.status('ps'), mt: await lab.status('mt') };
    await lab.stopAll();
    if (profDir) {
      await nameProfiles(profDir, (pid) => pids.get(pid));
      console.log(`    CPU profiles in ${profDir}; summarize with node dist/bench/cpuprofile.js <file> (figures are slower with the profiler on)`);
    }
    const rs = (vol0(status.agent)?.resync ?? {}) as Status;
    // Never seen by a poll: stays NaN, written as null with a note; convergence is not that moment.
    const hashed = (await lab.logLines('mt')).find((l) => l.msg === 'replica hashed');
    const started = num(rs.startedAt);
    const finished = num(rs.finishedAt);
    return {
      convergedSeconds,
      resyncCompleteSeconds,
      resyncEngineSeconds: (finished - started) / 1000,
      resyncStartSeconds: (started - t0ms) / 1000,
      mtSeedHashSeconds: hashed ? num(hashed.ms) / 1000 : NaN,
      mtSeedHashedAtSeconds: hashed ? (num(hashed.time) - t0ms) / 1000 : NaN,
      bytesSent: num(rs.bytesSent),
      hashBytes: num(rs.hashBytes),
      differingBlocks: num(rs.differingBlocks),
      bytesProcessed: num(rs.bytesProcessed),
      psBytesReceived: num((status.ps?.receiver as Status | undefined)?.bytesReceived),
      mtBytesReceived: num((status.mt?.receiver as Status | undefined)?.bytesReceived),
      agentTcp: agentTcp.totals(),
      psTcp: psTcp.totals(),
      cpu: { agent: cpu.seconds('agent'), ps: cpu.seconds('ps'), mt: cpu.seconds('mt') },
      faults: { agent: cpu.faults('agent'), ps: cpu.faults('ps'), mt: cpu.faults('mt') },
      equal: (await sha256File(replica)) === sourceSha,
    };
  } finally {
    await lab.stopAll();
    for (const d of Object.values(lab.stateDirs)) await fsp.rm(d, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------

interface CaseResult {
  label: string;
  sizeBytes: number;
  percent: number;
  changedBlocks: number;
  changedBytes: number;
  rsync: RsyncRun[];
  rdiff: RdiffRun;
  tm: TidemarkRun;
  /** 1-minute load average when the case started and when Tidemark started: other work on the machine skews figures. */
  loadAtStart: number;
  loadAtTidemark: number;
}

/** rsync's default block size for a file of this length (generator.c sum_sizes_sqroot, protocol ≥ 30). */
function rsyncDefaultBlock(len: number): number {
  const BLOCK_SIZE = 700;
  const MAX = 1 << 17;
  if (len <= BLOCK_SIZE * BLOCK_SIZE) return BLOCK_SIZE;
  let c = 1;
  let l = len;
  while ((l = Math.floor(l / 4)) > 0) c *= 2;
  if (c >= MAX || c === 0) return MAX;
  let blength = 0;
  do {
    blength |= c;
    if (len < blength * blength) blength &= ~c;
    c >>= 1;
  } while (c >= 8);
  return Math.max(blength, BLOCK_SIZE);
}

async function runCase(sizeDir: string, source: string, sourceSha: string, sizeBytes: number, percent: number, label: string): Promise<CaseResult> {
  const caseDir = path.join(sizeDir, `p${percent}`);
  await fsp.rm(caseDir, { recursive: true, force: true });
  await fsp.mkdir(path.join(caseDir, 'dest'), { recursive: true });
  const modified = path.join(caseDir, 'modified.img');
  const replica = path.join(caseDir, 'dest', 'replica.img');
  const blocksTotal = Math.ceil(sizeBytes / BLOCK);
  const changedBlocks = Math.round((blocksTotal * percent) / 100);
  const seed = `${sizeBytes}:${percent}`;
  const loadAtStart = os.loadavg()[0]!;
  try {
    console.log(`${label}: replica = source with ${changedBlocks} random 4 KiB blocks overwritten (${fmt((changedBlocks * BLOCK) / MB, 1)} MB)`);
    await makeModified(source, modified, pickBlocks(blocksTotal, changedBlocks, seed), seed);

    const rsyncs: RsyncRun[] = [];
    for (const bs of [null, 4096]) {
      await restoreReplica(modified, replica);
      console.log(`  rsync --inplace --no-whole-file ${bs === null ? '(default block size)' : `--block-size=${bs}`} via rsync daemon on loopback...`);
      const r = await rsyncRun(caseDir, source, replica, bs, sourceSha);
      console.log(`    ${fmt(r.seconds, 2)} s, ${fmt((r.bytesSent + r.bytesReceived) / MB, 1)} MB, ${r.equal ? 'sha256 equal' : 'SHA256 DIFFERS'}`);
      rsyncs.push(r);
    }

    console.log('  rdiff signature / delta / patch...');
    const rd = await rdiffRun(caseDir, source, modified, sourceSha);
    console.log(`    ${fmt(rd.sig.seconds + rd.delta.seconds + rd.patch.seconds, 2)} s, ${fmt((rd.sigBytes + rd.deltaBytes) / MB, 1)} MB, ${rd.equal ? 'sha256 equal' : 'SHA256 DIFFERS'}`);

    await restoreReplica(modified, replica);
    const loadAtTidemark = os.loadavg()[0]!;
    console.log(`  Tidemark: seeded replica, agent → process server → master target (load ${loadAtTidemark.toFixed(2)})...`);
    const tm = await tidemark(path.join(caseDir, 'lab'), source, replica, sourceSha);
    console.log(`    converged after ${fmt(tm.convergedSeconds, 2)} s, data ${fmt(tm.bytesSent / MB, 1)} MB + hashes ${fmt(tm.hashBytes / MB, 2)} MB, ${tm.equal ? 'sha256 equal' : 'SHA256 DIFFERS'}`);
    return { label, sizeBytes, percent, changedBlocks, changedBytes: changedBlocks * BLOCK, rsync: rsyncs, rdiff: rd, tm, loadAtStart, loadAtTidemark };
  } finally {
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') {
      for (const f of [modified, replica]) await fsp.rm(f, { force: true });
    }
  }
}

/** Whether a DAMON context pages out idle memory (page cache included): files do not stay cached. */
function damonReclaim(): boolean {
  try {
    const root = '/sys/kernel/mm/damon/admin/kdamonds';
    for (const k of readdirSync(root).filter((d) => /^\d+$/.test(d))) {
      if (readFileSync(`${root}/${k}/state`, 'utf8').trim() !== 'on') continue;
      for (const c of readdirSync(`${root}/${k}/contexts`).filter((d) => /^\d+$/.test(d))) {
        for (const sch of readdirSync(`${root}/${k}/contexts/${c}/schemes`).filter((d) => /^\d+$/.test(d))) {
          if (readFileSync(`${root}/${k}/contexts/${c}/schemes/${sch}/action`, 'utf8').trim() === 'pageout') return true;
        }
      }
    }
  } catch {
    // no DAMON sysfs
  }
  return false;
}

function sizeLabel(bytes: number): string {
  return bytes % GiB === 0 ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
}

async function run(): Promise<BenchResult> {
  requireTools();
  const base = benchSizeMiB(16, 'one resync window and some');
  const dir = path.join(WORK_DIR, 'resync');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const notes: string[] = [];
  let sizes = [base * MiB, 4 * base * MiB];
  // At a time: source, pristine modified copy, working replica, rdiff output, and Tidemark's journals.
  const fs = await fsp.statfs(dir);
  const free = fs.bavail * fs.bsize;
  const need = (s: number): number => 4.5 * s + GiB;
  if (free < need(sizes[1]!)) {
    const msg = `only ${fmt(free / GiB, 1)} GiB free under ${dir}; the ${sizeLabel(sizes[1]!)} cases need about ${fmt(need(sizes[1]!) / GiB, 1)} GiB: running ${sizeLabel(sizes[0]!)} only`;
    console.log(msg);
    notes.push(msg);
    sizes = [sizes[0]!];
    if (free < need(sizes[0]!)) throw new Error(`only ${fmt(free / GiB, 1)} GiB free under ${dir}; even ${sizeLabel(sizes[0]!)} needs about ${fmt(need(sizes[0]!) / GiB, 1)} GiB`);
  }

  const cases: CaseResult[] = [];
  try {
    for (const size of sizes) {
      const sizeDir = path.join(dir, sizeLabel(size).replace(' ', ''));
      await fsp.mkdir(sizeDir, { recursive: true });
      const source = path.join(sizeDir, 'source.img');
      console.log(`generating a ${sizeLabel(size)} source image of random bytes (AES-256-CTR keystream)...`);
      await writeRandom(source, size, `source:${size}`);
      await flush(source);
      const sourceSha = await sha256File(source);
      try {
        for (const p of PERCENTS) cases.push(await runCase(sizeDir, source, sourceSha, size, p, `${sizeLabel(size)}, ${p}%`));
      } finally {
        if (process.env.TIDEMARK_BENCH_KEEP !== '1') await fsp.rm(source, { force: true });
      }
    }
  } finally {
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') {
      // Keep the daemons' logs and rsyncd logs (small); drop every image.
      for (const size of sizes) {
        const sizeDir = path.join(dir, sizeLabel(size).replace(' ', ''));
        await fsp.rm(path.join(sizeDir, 'source.img'), { force: true });
        for (const p of PERCENTS) {
          await fsp.rm(path.join(sizeDir, `p${p}`, 'modified.img'), { force: true });
          await fsp.rm(path.join(sizeDir, `p${p}`, 'dest'), { recursive: true, force: true });
        }
      }
    }
  }

  return report(cases, sizes, notes);
}

function report(cases: CaseResult[], sizes: number[], notes: string[]): BenchResult {
  const figures: Figure[] = [];
  const references: Reference[] = [];
  const ratios: Ratio[] = [];
  const ok = (b: boolean): string => (b ? 'sha256 equal' : 'SHA256 DIFFERS');
  const table: string[][] = [['case', 'run', 'wall s', 'data MB', 'hash/sig MB', 'total MB', 'TCP MB', 'CPU s', 'data/changed', 'result']];
  for (const c of cases) {
    const tm = c.tm;
    const L = `[${c.label}]`;
    const tmTotal = tm.bytesSent + tm.hashBytes;
    const tmTcp = tm.agentTcp.sent + tm.agentTcp.received;
    const tmCpu = tm.cpu.agent + tm.cpu.ps + tm.cpu.mt;
    const rsTotal = (r: RsyncRun): number => r.bytesSent + r.bytesReceived;
    const bestWall = c.rsync.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const bestBytes = c.rsync.reduce((a, b) => (rsTotal(b) < rsTotal(a) ? b : a));
    const bestCpu = c.rsync.reduce((a, b) => (b.clientCpu + b.daemonCpu < a.clientCpu + a.daemonCpu ? b : a));
    const rd = c.rdiff;
    const rdWall = rd.sig.seconds + rd.delta.seconds + rd.patch.seconds;
    const rdCpu = rd.sig.cpuSeconds + rd.delta.cpuSeconds + rd.patch.cpuSeconds;

    figures.push(
      { name: `${L} volume size`, value: c.sizeBytes, unit: 'bytes' },
      { name: `${L} changed 4 KiB blocks`, value: c.changedBlocks, unit: 'count' },
      { name: `${L} changed bytes`, value: c.changedBytes, unit: 'bytes' },
      { name: `${L} tidemark wall time, daemons started to converged`, value: tm.convergedSeconds, unit: 's' },
      { name: `${L} tidemark wall time, daemons started to resync pass seen complete`, value: tm.resyncCompleteSeconds, unit: 's', ...(Number.isFinite(tm.resyncCompleteSeconds) ? {} : { note: 'not observed: no status poll saw the resync pass finished before convergence' }) },
      { name: `${L} tidemark resync engine time (finishedAt − startedAt)`, value: tm.resyncEngineSeconds, unit: 's' },
      { name: `${L} tidemark resync started after`, value: tm.resyncStartSeconds, unit: 's' },
      { name: `${L} master target seed hashing of the replica ('replica hashed' ms)`, value: tm.mtSeedHashSeconds, unit: 's' },
      { name: `${L} master target seed hashing finished after`, value: tm.mtSeedHashedAtSeconds, unit: 's' },
      { name: `${L} tidemark data sent (agent resync.bytesSent)`, value: tm.bytesSent, unit: 'bytes' },
      { name: `${L} tidemark hash exchange (agent resync.hashBytes)`, value: tm.hashBytes, unit: 'bytes' },
      { name: `${L} tidemark data + hash exchange`, value: tmTotal, unit: 'bytes' },
      { name: `${L} tidemark differing blocks found`, value: tm.differingBlocks, unit: 'count' },
      { name: `${L} tidemark source bytes hashed by the agent (resync.bytesProcessed)`, value: tm.bytesProcessed, unit: 'bytes' },
      { name: `${L} extent payload agent → process server (ps receiver.bytesReceived)`, value: tm.psBytesReceived, unit: 'bytes' },
      { name: `${L} extent payload process server → master target (mt receiver.bytesReceived)`, value: tm.mtBytesReceived, unit: 'bytes' },
      { name: `${L} TCP payload agent → process server (ss bytes_acked)`, value: tm.agentTcp.sent, unit: 'bytes' },
      { name: `${L} TCP payload process server → agent (ss bytes_received)`, value: tm.agentTcp.received, unit: 'bytes' },
      { name: `${L} TCP connections agent → process server seen`, value: tm.agentTcp.connections, unit: 'count' },
      { name: `${L} TCP payload process server → master target (ss bytes_acked)`, value: tm.psTcp.sent, unit: 'bytes' },
      { name: `${L} TCP payload master target → process server (ss bytes_received)`, value: tm.psTcp.received, unit: 'bytes' },
      { name: `${L} agent CPU`, value: tm.cpu.agent, unit: 's' },
      { name: `${L} process server CPU`, value: tm.cpu.ps, unit: 's' },
      { name: `${L} master target CPU`, value: tm.cpu.mt, unit: 's' },
      { name: `${L} agent minor page faults`, value: tm.faults.agent, unit: 'count' },
      { name: `${L} process server minor page faults`, value: tm.faults.ps, unit: 'count' },
      { name: `${L} master target minor page faults`, value: tm.faults.mt, unit: 'count' },
      { name: `${L} all daemons CPU`, value: tmCpu, unit: 's' },
      { name: `${L} tidemark data sent / changed bytes`, value: tm.bytesSent / c.changedBytes, unit: 'x' },
      { name: `${L} replica equals source (sha256)`, value: tm.equal, unit: 'bool' },
      { name: `${L} 1-minute load average when the case started`, value: c.loadAtStart, unit: 'load' },
      { name: `${L} 1-minute load average when Tidemark started`, value: c.loadAtTidemark, unit: 'load' },
    );
    for (const r of c.rsync) {
      references.push({
        name: `${L} rsync --inplace --no-whole-file (${r.setting})`,
        description: `rsync --inplace --no-whole-file${r.setting.startsWith('--') ? ' ' + r.setting : ''} --stats source rsync://127.0.0.1:PORT/bench/replica.img, to an rsync daemon on loopback (use chroot = no), onto a fresh copy of the modified replica; sha256 checked after`,
        figures: [
          { name: 'wall time (client start to exit)', value: r.seconds, unit: 's' },
          { name: 'Total bytes sent (client → daemon)', value: r.bytesSent, unit: 'bytes' },
          { name: 'Total bytes received (daemon → client)', value: r.bytesReceived, unit: 'bytes' },
          { name: 'total bytes on the connection', value: rsTotal(r), unit: 'bytes' },
          { name: 'Literal data', value: r.literal, unit: 'bytes' },
          { name: 'Matched data', value: r.matched, unit: 'bytes' },
          { name: 'client CPU', value: r.clientCpu, unit: 's' },
          { name: 'daemon CPU (its reaped per-connection children)', value: r.daemonCpu, unit: 's' },
          { name: 'CPU client + daemon', value: r.clientCpu + r.daemonCpu, unit: 's' },
          { name: 'literal data / changed bytes', value: r.literal / c.changedBytes, unit: 'x' },
          { name: 'replica equals source (sha256)', value: r.equal, unit: 'bool' },
        ],
      });
    }
    references.push({
      name: `${L} rdiff signature / delta / patch`,
      description: 'rdiff signature replica sig; rdiff delta sig source delta; rdiff patch replica delta out (librsync defaults); bytes = size(sig) + size(delta); sha256(out) checked',
      figures: [
        { name: 'signature wall time', value: rd.sig.seconds, unit: 's' },
        { name: 'delta wall time', value: rd.delta.seconds, unit: 's' },
        { name: 'patch wall time', value: rd.patch.seconds, unit: 's' },
        { name: 'total wall time', value: rdWall, unit: 's' },
        { name: 'signature CPU', value: rd.sig.cpuSeconds, unit: 's' },
        { name: 'delta CPU', value: rd.delta.cpuSeconds, unit: 's' },
        { name: 'patch CPU', value: rd.patch.cpuSeconds, unit: 's' },
        { name: 'total CPU', value: rdCpu, unit: 's' },
        { name: 'signature size', value: rd.sigBytes, unit: 'bytes' },
        { name: 'delta size', value: rd.deltaBytes, unit: 'bytes' },
        { name: 'signature + delta', value: rd.sigBytes + rd.deltaBytes, unit: 'bytes' },
        { name: 'delta / changed bytes', value: rd.deltaBytes / c.changedBytes, unit: 'x' },
        { name: 'output equals source (sha256)', value: rd.equal, unit: 'bool' },
      ],
    });
    ratios.push(
      { name: `${L} tidemark wall / best rsync wall (${bestWall.setting}) (target ≤ ${TARGET_WALL_VS_RSYNC})`, numerator: `${L} tidemark wall time, daemons started to converged`, denominator: `${L} rsync --inplace --no-whole-file (${bestWall.setting}) wall time`, value: tm.convergedSeconds / bestWall.seconds },
      { name: `${L} tidemark data sent / changed bytes (target ≤ ${TARGET_DATA_VS_CHANGED})`, numerator: `${L} tidemark data sent (agent resync.bytesSent)`, denominator: `${L} changed bytes`, value: tm.bytesSent / c.changedBytes },
      { name: `${L} tidemark data + hash exchange / best rsync total bytes (${bestBytes.setting})`, numerator: `${L} tidemark data + hash exchange`, denominator: `${L} rsync (${bestBytes.setting}) total bytes on the connection`, value: tmTotal / rsTotal(bestBytes) },
      { name: `${L} tidemark TCP bytes agent ↔ process server / best rsync total bytes (${bestBytes.setting})`, numerator: `${L} TCP payload agent ↔ process server`, denominator: `${L} rsync (${bestBytes.setting}) total bytes on the connection`, value: tmTcp / rsTotal(bestBytes) },
      { name: `${L} tidemark all daemons CPU / least rsync CPU (${bestCpu.setting})`, numerator: `${L} all daemons CPU`, denominator: `${L} rsync (${bestCpu.setting}) CPU client + daemon`, value: tmCpu / (bestCpu.clientCpu + bestCpu.daemonCpu) },
    );

    const mb = (b: number, d = 1): string => fmt(b / MB, d);
    const x = (b: number): string => `${fmt(b / c.changedBytes, 2)}x`;
    table.push([c.label, `changed: ${c.changedBlocks} blocks`, '-', mb(c.changedBytes), '-', '-', '-', '-', '1.00x', `load ${c.loadAtStart.toFixed(2)} / ${c.loadAtTidemark.toFixed(2)}`]);
    for (const r of c.rsync) {
      table.push(['', `rsync ${r.setting}`, fmt(r.seconds, 2), mb(r.literal), mb(rsTotal(r) - r.literal), mb(rsTotal(r)), '-', fmt(r.clientCpu + r.daemonCpu, 2), x(r.literal), ok(r.equal)]);
    }
    table.push(['', 'rdiff sig+delta+patch', fmt(rdWall, 2), mb(rd.deltaBytes), mb(rd.sigBytes), mb(rd.sigBytes + rd.deltaBytes), '-', fmt(rdCpu, 2), x(rd.deltaBytes), ok(rd.equal)]);
    table.push(['', 'tidemark, to converged', fmt(tm.convergedSeconds, 2), mb(tm.bytesSent), mb(tm.hashBytes, 2), mb(tmTotal), mb(tmTcp), fmt(tmCpu, 2), x(tm.bytesSent), ok(tm.equal)]);
    table.push(['', '  resync pass complete', fmt(tm.resyncCompleteSeconds, 2), '-', '-', '-', '-', '-', '-', `engine ${fmt(tm.resyncEngineSeconds, 2)} s from ${fmt(tm.resyncStartSeconds, 2)} s`]);
    table.push(['', '  mt seed hashing', fmt(tm.mtSeedHashSeconds, 2), '-', '-', '-', '-', '-', '-', `done at ${fmt(tm.mtSeedHashedAtSeconds, 2)} s`]);
    table.push(['', '  CPU agent / ps / mt', '-', '-', '-', '-', '-', '-', '-', `${fmt(tm.cpu.agent, 2)} / ${fmt(tm.cpu.ps, 2)} / ${fmt(tm.cpu.mt, 2)} s; page faults ${fmt(tm.faults.agent, 0)} / ${fmt(tm.faults.ps, 0)} / ${fmt(tm.faults.mt, 0)}`]);
  }

  notes.push(
    'MB = 10^6 bytes. "data" is changed-block payload: rsync Literal data, rdiff delta size, Tidemark resync.bytesSent (whole 4 KiB blocks). "hash/sig" is what the comparison itself costs: rsync total − literal (block checksums, tokens, protocol), rdiff signature size, Tidemark resync.hashBytes (range hashes, range lists and answers). "total" = data + hash/sig; for rsync it is Total bytes sent + received from --stats, the bytes rsync wrote to its TCP connection.',
    '"TCP MB" is Tidemark\'s TCP payload between agent and process server in both directions (ss -ti bytes_acked + bytes_received, sampled every poll and right before stopping): TLS records, framing, hash queries and answers, extents, acks. The process server → master target hop is in the JSON figures.',
    'Tidemark wall time runs from starting the three daemons to convergence (lab.waitConverged: resync done, FLAG_RESYNC_END applied, a full scan found nothing new); it includes three Node start-ups, the TLS handshakes, the master target hashing the whole seeded replica once (row "mt seed hashing") and the confirming scan. rsync is timed from starting its client to its exit against an rsync daemon already listening; rdiff is the sum of its three steps.',
    'CPU: Tidemark = utime + stime of each daemon from /proc, read right before SIGTERM (start-up included). rsync = client (bash `times`) + the daemon\'s reaped per-connection children (delta of its cutime/cstime). rdiff = bash `times` of each step.',
    `Files: the source is an AES-256-CTR keystream (incompressible); the replica is a copy (cp --reflink=never) with N distinct random 4 KiB-aligned blocks overwritten with other random bytes; every run starts from a fresh copy of that modified replica. The machine has ${Math.round(os.totalmem() / GiB)} GiB of RAM, room for the files in the page cache${damonReclaim() ? '; but this kernel runs DAMON proactive reclaim (pageout of pages idle for some tens of seconds), so in the longer runs, mostly at 4 GiB, parts of the files are read back from disk by whichever tool comes next' : ''}.`,
    `rsync's default block size is about sqrt(file size): ${sizes.map((s) => `${rsyncDefaultBlock(s)} bytes at ${sizeLabel(s)}`).join(', ')}; each changed 4 KiB block makes it resend a whole such block.`,
    'The case row shows the 1-minute load average when the case started / when Tidemark started: the machine (2 cores here) may be shared with other work, which skews absolute figures; prefer figures from a quiet run. Prepared files are fsync\'d before each timed run so no tool pays for writing back the test data.',
    `Targets (issue): tidemark wall ≤ ${TARGET_WALL_VS_RSYNC}× rsync's best wall, and data sent ≤ ${TARGET_DATA_VS_CHANGED}× the changed bytes; they are in the ratio names because the ratio printer shows a target as a lower bound.`,
  );

  return {
    params: {
      sizesBytes: sizes,
      changedPercents: [...PERCENTS],
      blockSize: BLOCK,
      agentCycleIntervalMs: CYCLE_INTERVAL_MS,
      targets: { tidemarkWallOverBestRsyncWallAtMost: TARGET_WALL_VS_RSYNC, tidemarkDataOverChangedBytesAtMost: TARGET_DATA_VS_CHANGED },
      rsync: version('rsync', '--version'),
      rdiff: version('rdiff', '--version'),
      damonProactiveReclaim: damonReclaim(),
      rsyncDefaultBlockSize: Object.fromEntries(sizes.map((s) => [sizeLabel(s), rsyncDefaultBlock(s)])),
      cases: cases.map((c) => ({ label: c.label, sizeBytes: c.sizeBytes, percent: c.percent, changedBlocks: c.changedBlocks, changedBytes: c.changedBytes })),
    },
    figures,
    references,
    quoted: [],
    ratios,
    table,
    notes,
  };
}
