// Fan-in: 1, 4 and 16 agents replicating at once into one process server (LZ4 on and off), each agent
// one slice of the same realistic ext4 image, so every run moves the same bytes: aggregate throughput,
// process-server CPU seconds per GiB, and the process server's compression ratio on that corpus next
// to the lz4 and zstd command-line tools run on the same bytes in the same run.
import { execFileSync, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Fleet, PS } from '../lab/fleet.js';
import { makeCorpus, nonZeroBlocks, slice, type CorpusFacts } from './corpus.js';
import { benchSizeMiB, CpuMeter, fmt, GiB, MiB, timed, which, WORK_DIR, type BenchResult, type Benchmark, type Figure, type Ratio, type Reference } from './harness.js';
import { sha256File } from './volume.js';

const AGENT_COUNTS = [1, 4, 16] as const;
/** TIDEMARK_FANIN_AGENTS="1" (comma-separated): run only these agent counts (a quicker same-run comparison). */
function agentCounts(): number[] {
  const env = process.env.TIDEMARK_FANIN_AGENTS;
  if (env === undefined || env === '') return [...AGENT_COUNTS];
  const ns = env.split(',').map(Number);
  if (ns.some((n) => !(AGENT_COUNTS as readonly number[]).includes(n))) throw new Error(`TIDEMARK_FANIN_AGENTS takes some of ${AGENT_COUNTS.join(', ')}, not "${env}"`);
  return ns;
}
const PRELOAD = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'cpu-prof-preload.js')).href;
const COMPRESSIONS = ['lz4', 'none'] as const;
const CYCLE_INTERVAL_MS = 500;
const TIMEOUT_MS = 30 * 60_000;

export const fanIn: Benchmark = {
  description: 'fan-in: 1, 4 and 16 agents into one process server with LZ4 on and off (throughput, process-server CPU per GiB), and its compression ratio on a disk-image corpus vs lz4 and zstd',
  run,
};

type Status = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface CliResult {
  label: string;
  inputBytes: number;
  outputBytes: number;
  seconds: number;
  cpuSeconds: number;
}

/** `<cmd> <args> -c input > out` under bash, timed; `times` gives the CPU of the child. */
export async function cli(label: string, cmd: string, args: string[], input: string, out: string): Promise<CliResult> {
  const script = `set -euo pipefail\n${cmd} ${args.join(' ')} -c "$1" > "$2"\ntimes`;
  const { value: stdout, seconds } = await timed(() => new Promise<string>((resolve, reject) => {
    const p = spawn('bash', ['-c', script, label, input, out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    p.stdout.on('data', (d: Buffer) => (so += d.toString()));
    p.stderr.on('data', (d: Buffer) => (se += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(so) : reject(new Error(`${label} exited ${code}: ${se.trim()}`))));
  }));
  // `times`: the shell's user/sys, then its children's, as "XmY.YYYs XmY.YYYs".
  const secs = (s: string): number => {
    const m = /^(\d+)m([\d.]+)s$/.exec(s);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  };
  const cpuSeconds = stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).map(secs).reduce((a, b) => a + b, 0)).reduce((a, b) => a + b, 0);
  const [inSt, outSt] = [await fsp.stat(input), await fsp.stat(out)];
  await fsp.rm(out, { force: true });
  return { label, inputBytes: inSt.size, outputBytes: outSt.size, seconds, cpuSeconds };
}

interface FanInRun {
  agents: number;
  compression: (typeof COMPRESSIONS)[number];
  /** From starting the daemons to every replica complete. */
  wallSeconds: number;
  /** From the first byte at the process server to every replica complete. */
  dataSeconds: number;
  /** CPU seconds over the data time (the process server), or in all (the others, start-up included). */
  rawIn: number;
  storedIn: number;
  forwarded: number;
  cpu: { ps: number; mt: number; agents: number };
  equal: boolean;
}

/** Every volume's replica is complete: the agent's initial resync is over and all it journaled is applied. */
async function complete(fleet: Fleet, agents: string[]): Promise<boolean> {
  const mt = await fleet.status('mt-1');
  if (!mt) return false;
  const applied = new Map((mt.volumes as Status[]).map((v) => [String(v.id), num(v.appliedSeq)]));
  for (const a of agents) {
    const s = await fleet.status(a);
    const v = (s?.volumes as Status[] | undefined)?.[0];
    if (!v || v.consistentAfterResync !== true || v.journalFiles !== 0 || !(num(v.lastSeq) > 0) || applied.get(String(v.id)) !== v.lastSeq) return false;
  }
  return true;
}

async function checkAlive(fleet: Fleet, dir: string): Promise<void> {
  for (const [name, child] of fleet.procs) {
    if (child.exitCode === null && child.signalCode === null) continue;
    const log = await fsp.readFile(path.join(dir, `${name}.log`), 'utf8').catch(() => '');
    throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}); end of its log:\n${log.split('\n').slice(-15).join('\n')}`);
  }
}

async function fanInRun(work: string, corpus: string, size: number, n: number, compression: FanInRun['compression']): Promise<FanInRun> {
  const dir = path.join(work, `${n}-agents-${compression}`);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const agents = Array.from({ length: n }, (_, i) => `agent-${i + 1}`);
  const share = Math.floor(size / n / 4096) * 4096;
  const volumes = agents.map((agent, i) => ({ id: `vol-${i + 1}`, agent, masterTarget: 'mt-1', source: path.join(dir, `vol-${i + 1}.img`), replica: path.join(dir, `vol-${i + 1}.replica.img`) }));
  for (const [i, v] of volumes.entries()) await slice(corpus, v.source, i * share, share);
  // TIDEMARK_BENCH_CPU_PROF=1: every daemon writes a V8 CPU profile under WORK_DIR/profiles/fan-in/<run>.
  const profDir = process.env.TIDEMARK_BENCH_CPU_PROF ? path.join(WORK_DIR, 'profiles', 'fan-in', `${n}-agents-${compression}`) : null;
  if (profDir) {
    await fsp.rm(profDir, { recursive: true, force: true });
    await fsp.mkdir(profDir, { recursive: true });
    console.log(`  CPU profiles of the daemons go to ${profDir} (figures are slower with the profiler on)`);
  }
  const fleet = await Fleet.create({
    dir, agents, masterTargets: ['mt-1'], volumes, agent: { cycleIntervalMs: CYCLE_INTERVAL_MS }, ps: { compression },
    ...(profDir ? { env: { NODE_OPTIONS: `--import=${PRELOAD}`, TIDEMARK_CPU_PROF_DIR: profDir } } : {}),
  });
  const cpu = new CpuMeter();
  const sampleAll = (): void => cpu.sample();
  try {
    const t0 = Date.now();
    fleet.startAll();
    for (const [name, child] of fleet.procs) cpu.watch(name, child.pid);
    let first = NaN;
    let psCpuAtFirst = 0;
    let ps: Status | null = null;
    let lastLog = 0;
    for (;;) {
      sampleAll();
      await checkAlive(fleet, dir);
      ps = await fleet.status(PS);
      if (Number.isNaN(first) && num((ps?.receiver as Status | undefined)?.bytesReceived) > 0) {
        first = Date.now();
        psCpuAtFirst = cpu.seconds(PS); // start-up and handshakes are not data work
      }
      if (await complete(fleet, agents)) break;
      if (Date.now() - t0 > TIMEOUT_MS) throw new Error(`${n} agents, ${compression}: replicas not complete after ${TIMEOUT_MS / 1000} s`);
      if (Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        const inMiB = ((ps?.volumes as Status[] | undefined) ?? []).reduce((s, v) => s + num(v.rawBytesIn), 0) / MiB;
        console.log(`  ${n} agents, ${compression}: t=${((Date.now() - t0) / 1000).toFixed(0)} s, ${fmt(inMiB, 0)} MiB into the process server`);
      }
      await sleep(250);
    }
    const done = Date.now();
    sampleAll(); // the work is done: what the process server spent on it
    ps = await fleet.status(PS);
    const psCpu = cpu.seconds(PS) - psCpuAtFirst;
    const mtCpu = cpu.seconds('mt-1');
    const agentsCpu = agents.reduce((s, a) => s + cpu.seconds(a), 0);
    const vols = (ps?.volumes as Status[] | undefined) ?? [];
    const fwd = (ps?.forwarders as Record<string, Status> | undefined)?.['mt-1'];
    // Confirm with a full rescan, then compare every replica with its source.
    await fleet.waitConverged(done, TIMEOUT_MS);
    await fleet.stopAll();
    let equal = true;
    for (const v of volumes) if ((await sha256File(v.replica)) !== (await sha256File(v.source))) equal = false;
    return {
      agents: n,
      compression,
      wallSeconds: (done - t0) / 1000,
      dataSeconds: (done - first) / 1000,
      rawIn: vols.reduce((s, v) => s + num(v.rawBytesIn), 0),
      storedIn: vols.reduce((s, v) => s + num(v.storedBytesIn), 0),
      forwarded: num(fwd?.bytesSent),
      cpu: { ps: psCpu, mt: mtCpu, agents: agentsCpu },
      equal,
    };
  } finally {
    await fleet.stopAll();
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') await fsp.rm(dir, { recursive: true, force: true });
  }
}

function version(cmd: string, arg: string): string {
  try {
    return /\d+\.\d+\.\d+/.exec(execFileSync(cmd, [arg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))?.[0] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function run(): Promise<BenchResult> {
  const missing = ['lz4', 'zstd', 'mkfs.ext4', 'bash'].filter((x) => which(x) === null);
  if (missing.length > 0) throw new Error(`fan-in needs ${missing.join(', ')} on PATH (Debian packages: lz4, zstd, e2fsprogs)`);
  const mib = benchSizeMiB(64, 'ext4 needs room, and 16 agents a slice each');
  const size = mib * MiB;
  const work = path.join(WORK_DIR, 'fan-in');
  await fsp.rm(work, { recursive: true, force: true });
  await fsp.mkdir(work, { recursive: true });
  const corpus = path.join(work, 'corpus.img');
  const nonZero = path.join(work, 'nonzero.bin');
  try {
    console.log(`building a ${mib} MiB ext4 corpus (typescript/lib, node_modules, logs, random data, free space)...`);
    const facts: CorpusFacts = await makeCorpus(work, corpus, mib);
    await nonZeroBlocks(corpus, nonZero);
    console.log(`  ${facts.files} files; ${fmt(facts.nonZeroBytes / MiB, 0)} MiB of the image is not zero`);

    console.log('references: lz4 and zstd on the same bytes...');
    const out = path.join(work, 'cli.out');
    const refs = [
      await cli('lz4 -1, non-zero blocks', 'lz4', ['-1', '-q'], nonZero, out),
      await cli('zstd -1, non-zero blocks', 'zstd', ['-1', '-q'], nonZero, out),
      await cli('zstd -3 (default), non-zero blocks', 'zstd', ['-3', '-q'], nonZero, out),
      await cli('lz4 -1, whole image', 'lz4', ['-1', '-q'], corpus, out),
      await cli('zstd -3 (default), whole image', 'zstd', ['-3', '-q'], corpus, out),
    ];

    const runs: FanInRun[] = [];
    for (const compression of COMPRESSIONS) {
      for (const n of agentCounts()) {
        console.log(`fan-in: ${n} agent(s), compression ${compression}...`);
        const r = await fanInRun(work, corpus, size, n, compression);
        console.log(`  ${fmt(r.rawIn / MiB / r.dataSeconds)} MiB/s of data, process server ${fmt(r.cpu.ps / (r.rawIn / GiB), 2)} CPU s/GiB, replicas ${r.equal ? 'equal' : 'DIFFER'}`);
        runs.push(r);
      }
    }
    return report(mib, facts, refs, runs);
  } finally {
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') {
      for (const f of [corpus, nonZero]) await fsp.rm(f, { force: true });
    }
  }
}

function report(mib: number, facts: CorpusFacts, refs: CliResult[], runs: FanInRun[]): BenchResult {
  const name = (r: FanInRun): string => `${r.agents} agent${r.agents > 1 ? 's' : ''}, ${r.compression === 'lz4' ? 'LZ4 on' : 'LZ4 off'}`;
  const dataMiBs = (r: FanInRun): number => r.rawIn / MiB / r.dataSeconds;
  const psPerGiB = (r: FanInRun): number => r.cpu.ps / (r.rawIn / GiB);
  const figures: Figure[] = [
    { name: 'corpus image size', value: mib, unit: 'MiB' },
    { name: 'corpus non-zero data', value: facts.nonZeroBytes / MiB, unit: 'MiB' },
  ];
  for (const r of runs) {
    const p = name(r);
    figures.push(
      { name: `${p}: wall time from start to every replica complete`, value: r.wallSeconds, unit: 's' },
      { name: `${p}: wall time from first byte at the process server to every replica complete`, value: r.dataSeconds, unit: 's' },
      { name: `${p}: fan-in throughput, data into the process server (rawBytesIn) / data time`, value: dataMiBs(r), unit: 'MiB/s' },
      { name: `${p}: throughput, image size / wall time`, value: mib / r.wallSeconds, unit: 'MiB/s' },
      { name: `${p}: raw bytes into the process server`, value: r.rawIn, unit: 'bytes' },
      { name: `${p}: stored (cached and forwarded) bytes`, value: r.storedIn, unit: 'bytes' },
      { name: `${p}: forwarder bytes sent to the master target`, value: r.forwarded, unit: 'bytes' },
      { name: `${p}: process server compression ratio (raw / stored)`, value: r.rawIn / r.storedIn, unit: 'x' },
      { name: `${p}: process server CPU`, value: r.cpu.ps, unit: 's' },
      { name: `${p}: process server CPU per GiB of data`, value: psPerGiB(r), unit: 's/GiB' },
      { name: `${p}: master target CPU per GiB of data`, value: r.cpu.mt / (r.rawIn / GiB), unit: 's/GiB' },
      { name: `${p}: all agents CPU per GiB of data`, value: r.cpu.agents / (r.rawIn / GiB), unit: 's/GiB' },
      { name: `${p}: every replica equals its source (sha256)`, value: r.equal, unit: 'bool' },
    );
  }
  const references: Reference[] = refs.map((c) => ({
    name: c.label,
    description: `${c.label.split(',')[0]} -c on ${c.label.endsWith('whole image') ? 'the whole corpus image' : 'the image\'s non-zero 4 KiB blocks concatenated (what an initial replication sends)'}; bash times for CPU`,
    figures: [
      { name: 'input', value: c.inputBytes, unit: 'bytes' },
      { name: 'output', value: c.outputBytes, unit: 'bytes' },
      { name: 'compression ratio', value: c.inputBytes / c.outputBytes, unit: 'x' },
      { name: 'throughput of input', value: c.inputBytes / MiB / c.seconds, unit: 'MiB/s' },
      { name: 'CPU per GiB of input', value: c.cpuSeconds / (c.inputBytes / GiB), unit: 's/GiB' },
    ],
  }));
  const find = (agents: number, c: FanInRun['compression']): FanInRun | undefined => runs.find((r) => r.agents === agents && r.compression === c);
  const ratios: Ratio[] = [];
  for (const c of COMPRESSIONS) {
    const one = find(1, c);
    for (const n of [4, 16]) {
      const r = find(n, c);
      if (one && r) ratios.push({ name: `fan-in throughput ${n} agents / 1 agent, ${c}`, numerator: `${name(r)}: fan-in throughput`, denominator: `${name(one)}: fan-in throughput`, value: dataMiBs(r) / dataMiBs(one) });
    }
  }
  const lz1 = find(1, 'lz4');
  const none1 = find(1, 'none');
  const [lzCli, , zstd3] = refs;
  if (lz1 && lzCli) ratios.push({ name: 'process server LZ4 ratio / lz4 -1 CLI ratio (same bytes)', numerator: `${name(lz1)}: process server compression ratio`, denominator: 'lz4 -1, non-zero blocks: compression ratio', value: lz1.rawIn / lz1.storedIn / (lzCli.inputBytes / lzCli.outputBytes) });
  if (lz1 && zstd3) ratios.push({ name: 'process server LZ4 ratio / zstd -3 CLI ratio (same bytes)', numerator: `${name(lz1)}: process server compression ratio`, denominator: 'zstd -3, non-zero blocks: compression ratio', value: lz1.rawIn / lz1.storedIn / (zstd3.inputBytes / zstd3.outputBytes) });
  if (lz1 && none1) ratios.push({ name: 'process server CPU per GiB, LZ4 on / off (1 agent)', numerator: `${name(lz1)}: process server CPU per GiB`, denominator: `${name(none1)}: process server CPU per GiB`, value: psPerGiB(lz1) / psPerGiB(none1) });
  if (lz1 && lzCli) ratios.push({ name: 'process server CPU per GiB with LZ4 / lz4 -1 CLI CPU per GiB', numerator: `${name(lz1)}: process server CPU per GiB`, denominator: 'lz4 -1, non-zero blocks: CPU per GiB', value: psPerGiB(lz1) / (lzCli.cpuSeconds / (lzCli.inputBytes / GiB)) });

  const ok = (b: boolean): string => (b ? 'sha256 equal' : 'SHA256 DIFFERS');
  const table: string[][] = [['run', 'MiB/s data', 'MiB/s image', 'PS CPU s/GiB', 'ratio', 'result']];
  for (const r of runs) table.push([`tidemark, ${name(r)}`, fmt(dataMiBs(r)), fmt(mib / r.wallSeconds), fmt(psPerGiB(r), 2), fmt(r.rawIn / r.storedIn, 2), ok(r.equal)]);
  for (const c of refs) table.push([c.label, fmt(c.inputBytes / MiB / c.seconds), '-', fmt(c.cpuSeconds / (c.inputBytes / GiB), 2), fmt(c.inputBytes / c.outputBytes, 2), '-']);
  return {
    params: {
      imageSizeMiB: mib,
      agentCounts: agentCounts(),
      volumePerAgent: 'agent i of N replicates bytes [i/N, (i+1)/N) of the image as its volume',
      masterTargets: 1,
      agentCycleIntervalMs: CYCLE_INTERVAL_MS,
      corpus: facts,
      lz4: version('lz4', '--version'),
      zstd: version('zstd', '--version'),
    },
    figures,
    references,
    quoted: [],
    ratios,
    table,
    notes: [
      'Each run replicates the same image: agent i of N has bytes [i/N, (i+1)/N) of it as its volume, all starting at once into one process server and one master target on loopback. "MiB/s data" = raw bytes into the process server / time from its first byte to every replica complete (initial resync over and all of it applied); "MiB/s image" = image size / time from starting the daemons (zero blocks are never sent).',
      'PS CPU = utime + stime of the process server (all threads, from /proc) from its first byte received to the moment every replica is complete (start-up excluded), per GiB of raw data it received: it verifies every extent\'s checksum, compresses (LZ4 on), writes and fsyncs its cache and forwards.',
      'ratio: for Tidemark the process server\'s raw / stored bytes (LZ4 per extent of at most 1 MiB, stored raw where it does not compress); for the tools, input / output of `-c` on the non-zero blocks (the same bytes Tidemark sends) or on the whole image (zeros included).',
      'The machine may be shared with other work and has few cores: 16 agents plus the process server and master target compete for them, so compare the ratios measured in the same run rather than absolute figures.',
    ],
  };
}
