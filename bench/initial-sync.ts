// Initial replication of a 1 GiB volume end to end on loopback: MiB/s and CPU seconds per GiB of each
// daemon, next to references measured in the same run: a raw sequential read of the source, and the
// same bytes through `lz4 -1 | TCP | lz4 -d` with standard tools (lz4, socat).
import { execFileSync, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freePort, Lab, type DaemonName } from '../lab/lab.js';
import { CpuMeter, fmt, GiB, MiB, timed, which, WORK_DIR, type BenchResult, type Benchmark, type Figure, benchSizeMiB, nameProfiles } from './harness.js';
import { makeVolume, sha256File, type VolumeFacts } from './volume.js';

const VOLUME_ID = 'bench-vol';
const CYCLE_INTERVAL_MS = 500;
const FILL = 0.62;
const TEXT_SHARE = 0.6;

export const initialSync: Benchmark = {
  description: 'initial replication of a 1 GiB ext4 volume through agent, process server and master target on loopback, vs raw read and lz4 -1 | TCP | lz4 -d',
  run,
};


function requireTools(): void {
  const missing = ['lz4', 'socat', 'mkfs.ext4', 'bash'].filter((t) => which(t) === null);
  if (missing.length > 0) {
    throw new Error(`initial-sync needs ${missing.join(', ')} on PATH for its references and volume (Debian packages: lz4, socat, e2fsprogs); install them and run again`);
  }
}

/** Reference 1: read the whole source in 4 MiB chunks from a warm page cache. */
async function rawRead(file: string): Promise<{ seconds: number; bytes: number }> {
  const buf = Buffer.allocUnsafe(4 * MiB);
  const readAll = async (): Promise<number> => {
    const fh = await fsp.open(file, 'r');
    try {
      let total = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) return total;
        total += bytesRead;
      }
    } finally {
      await fh.close();
    }
  };
  await readAll(); // warm the page cache
  const { value: bytes, seconds } = await timed(readAll);
  return { seconds, bytes };
}

/**
 * Reference 2: `lz4 -1 -c source | socat → TCP loopback → socat | lz4 -d -c > out`, timed as a whole.
 * bash's `times` gives the CPU seconds of every process of the pipeline (children it waited for).
 */
async function lz4Pipeline(source: string, out: string): Promise<{ seconds: number; cpuSeconds: number }> {
  const port = await freePort();
  const script = [
    'set -euo pipefail',
    `( socat -u TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr STDOUT | lz4 -d -c > "$2" ) &`,
    'rx=$!',
    `lz4 -1 -c "$1" | socat -u STDIN TCP:127.0.0.1:${port},retry=200,interval=0.05`,
    'wait $rx',
    'times',
  ].join('\n');
  const { value: stdout, seconds } = await timed(
    () =>
      new Promise<string>((resolve, reject) => {
        const p = spawn('bash', ['-c', script, 'lz4-pipeline', source, out], { stdio: ['ignore', 'pipe', 'pipe'] });
        let so = '';
        let se = '';
        p.stdout.on('data', (d: Buffer) => (so += d.toString()));
        p.stderr.on('data', (d: Buffer) => (se += d.toString()));
        p.on('error', reject);
        p.on('exit', (code) => (code === 0 ? resolve(so) : reject(new Error(`lz4 | socat pipeline exited ${code}: ${se.trim()}`))));
      }),
  );
  // `times`: the shell's own user/sys, then its children's, as "XmY.YYYs XmY.YYYs".
  const secs = (s: string): number => {
    const m = /^(\d+)m([\d.]+)s$/.exec(s);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  };
  const lines = stdout.trim().split('\n');
  const cpuSeconds = lines.map((l) => l.trim().split(/\s+/).map(secs).reduce((a, b) => a + b, 0)).reduce((a, b) => a + b, 0);
  return { seconds, cpuSeconds };
}

type Status = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
/** The note of a figure whose moment was never observed (NaN): written as null with why, not replaced. */
const unseen = (v: number, why: string): { note?: string } => (Number.isFinite(v) ? {} : { note: `not observed: ${why}` });
const vol0 = (s: Status | null): Status | undefined => (s?.volumes as Status[] | undefined)?.[0];

interface TidemarkRun {
  /** Seconds from starting the daemons. */
  firstPassSeconds: number;
  replicaCompleteSeconds: number;
  convergedSeconds: number;
  cpu: Record<DaemonName, number>;
  /** Minor page faults of each daemon, start to converged. */
  faults: Record<DaemonName, number>;
  /** Peak resident set of each daemon, MiB. */
  peakRssMiB: Record<DaemonName, number>;
  status: Record<DaemonName, Status | null>;
  replicaSha256: string;
}

async function tidemark(dir: string, source: string, replica: string, sizeMiBv: number): Promise<TidemarkRun> {
  const profDir = process.env.TIDEMARK_BENCH_CPU_PROF ? path.join(WORK_DIR, 'profiles', 'initial-sync') : null;
  if (profDir) {
    await fsp.rm(profDir, { recursive: true, force: true });
    await fsp.mkdir(profDir, { recursive: true });
    console.log(`  CPU profiles of the daemons go to ${profDir} (figures are slower with the profiler on)`);
  }
  const lab = await Lab.create({
    dir,
    volumes: [{ id: VOLUME_ID, source, replica }],
    agent: { cycleIntervalMs: CYCLE_INTERVAL_MS },
    ...(profDir ? { env: { NODE_OPTIONS: `--import=${PRELOAD}`, TIDEMARK_CPU_PROF_DIR: profDir } } : {}),
  });
  const cpu = new CpuMeter();
  const t0ms = Date.now();
  const t0 = process.hrtime.bigint();
  const since = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  let firstPassSeconds = NaN;
  let replicaCompleteSeconds = NaN;
  let lastLog = 0;
  const pids = new Map<DaemonName, number | undefined>();
  try {
    for (const n of ['mt', 'ps', 'agent'] as const) {
      pids.set(n, lab.start(n).pid);
      cpu.watch(n, pids.get(n));
    }
    await lab.waitConverged(t0ms, 30 * 60_000, async () => {
      cpu.sample();
      await checkAlive(lab, dir);
      const [a, m] = [vol0(await lab.status('agent')), vol0(await lab.status('mt'))];
      // The first pass is the initial resync: over once it is no longer active and has finished.
      const r = a?.resync as Status | undefined;
      const passed = r !== undefined && r.active === false && num(r.finishedAt) > 0;
      if (passed && Number.isNaN(firstPassSeconds)) firstPassSeconds = since();
      if (a && m && passed && a.journalFiles === 0 && m.appliedSeq === a.lastSeq && Number.isNaN(replicaCompleteSeconds)) replicaCompleteSeconds = since();
      if (since() - lastLog >= 5) {
        lastLog = since();
        console.log(`  t=${since().toFixed(0)}s applied ${fmt(num(m?.appliedBytes) / MiB, 0)} MiB, agent seq ${String(a?.lastSeq ?? '-')} → mt ${String(m?.appliedSeq ?? '-')}`);
      }
    });
    const convergedSeconds = since();
    // A moment no poll saw stays NaN (written as null with a note): convergence is not that moment.
    cpu.sample(); // right before SIGTERM: /proc/<pid> is gone once they exit
    const status = { agent: await lab.status('agent'), ps: await lab.status('ps'), mt: await lab.status('mt') };
    await lab.stopAll();
    if (profDir) await listProfiles(profDir, pids);
    console.log(`  converged after ${convergedSeconds.toFixed(1)} s (${fmt(sizeMiBv / convergedSeconds)} MiB/s); hashing the replica`);
    return {
      firstPassSeconds,
      replicaCompleteSeconds,
      convergedSeconds,
      cpu: { agent: cpu.seconds('agent'), ps: cpu.seconds('ps'), mt: cpu.seconds('mt') },
      faults: { agent: cpu.faults('agent'), ps: cpu.faults('ps'), mt: cpu.faults('mt') },
      peakRssMiB: { agent: cpu.peakRssMiB('agent'), ps: cpu.peakRssMiB('ps'), mt: cpu.peakRssMiB('mt') },
      status,
      replicaSha256: await sha256File(replica),
    };
  } finally {
    await lab.stopAll();
  }
}

const PRELOAD = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'cpu-prof-preload.js')).href;

/** A daemon that died will not converge: say so at once, with the end of its log. */
async function checkAlive(lab: Lab, dir: string): Promise<void> {
  for (const [name, child] of lab.procs) {
    if (child.exitCode === null && child.signalCode === null) continue;
    const log = await fsp.readFile(path.join(dir, `${name}.log`), 'utf8').catch(() => '');
    throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before convergence; end of ${path.join(dir, `${name}.log`)}:\n${log.split('\n').slice(-15).join('\n')}`);
  }
}

/** Name the profiles after their daemons (harness.nameProfiles) and say where they are. */
async function listProfiles(dir: string, pids: Map<DaemonName, number | undefined>): Promise<void> {
  await nameProfiles(dir, (pid) => [...pids].find(([, p]) => p === pid)?.[0]);
  console.log(`  profiles: ${(await fsp.readdir(dir)).join(', ')}; summarize with node dist/bench/cpuprofile.js <file>`);
}

async function run(): Promise<BenchResult> {
  requireTools();
  const mib = benchSizeMiB(64, 'ext4 needs room');
  const gib = (mib * MiB) / GiB;
  const dir = path.join(WORK_DIR, 'initial-sync');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  const lz4Out = path.join(dir, 'lz4-out.img');
  const keep = process.env.TIDEMARK_BENCH_KEEP === '1';
  try {
    console.log(`generating a ${mib} MiB ext4 volume (${FILL * 100}% files: ${TEXT_SHARE * 100}% text, the rest random)...`);
    const vol: VolumeFacts = await makeVolume(dir, source, { sizeMiB: mib, fill: FILL, textShare: TEXT_SHARE });
    console.log(`  ${vol.files} files; ${fmt(vol.nonZeroBytes / MiB, 0)} MiB of the volume is not zero`);

    console.log('reference: raw sequential read (warm page cache, 4 MiB reads)...');
    const raw = await rawRead(source);
    const rawMiBs = raw.bytes / MiB / raw.seconds;

    console.log('reference: lz4 -1 | socat TCP loopback | lz4 -d ...');
    const lz = await lz4Pipeline(source, lz4Out);
    const lz4Equal = (await sha256File(lz4Out)) === vol.sha256;
    await fsp.rm(lz4Out, { force: true });
    const lzMiBs = mib / lz.seconds;

    console.log('Tidemark: agent → process server → master target...');
    const tm = await tidemark(path.join(dir, 'lab'), source, replica, mib);
    const replicaEqual = tm.replicaSha256 === vol.sha256;
    const pv = vol0(tm.status.ps);
    const rawIn = num(pv?.rawBytesIn);
    const storedIn = num(pv?.storedBytesIn);
    const psReceiver = tm.status.ps?.receiver as Status | undefined;
    const fwd = Object.values((tm.status.ps?.forwarders as Record<string, Status> | undefined) ?? {})[0];
    const mtReceiver = tm.status.mt?.receiver as Status | undefined;
    const uploader = tm.status.agent?.uploader as Status | undefined;
    const volMiBs = mib / tm.convergedSeconds;
    const dataMiBs = rawIn / MiB / tm.convergedSeconds;
    const cpuTotal = tm.cpu.agent + tm.cpu.ps + tm.cpu.mt;

    const figures: Figure[] = [
      { name: 'volume size', value: mib, unit: 'MiB' },
      { name: 'non-zero data in the volume', value: vol.nonZeroBytes / MiB, unit: 'MiB' },
      { name: 'tidemark wall time to converged', value: tm.convergedSeconds, unit: 's' },
      { name: 'tidemark wall time to replica complete', value: tm.replicaCompleteSeconds, unit: 's', ...unseen(tm.replicaCompleteSeconds, 'no status poll (every 250 ms) saw the first pass over with everything of it applied before convergence') },
      { name: 'tidemark wall time of the agent first pass', value: tm.firstPassSeconds, unit: 's', ...unseen(tm.firstPassSeconds, 'no status poll (every 250 ms) saw the agent\'s initial resync over before convergence') },
      { name: 'tidemark throughput, volume size / time to converged', value: volMiBs, unit: 'MiB/s' },
      { name: 'tidemark throughput, non-zero data sent / time to converged', value: dataMiBs, unit: 'MiB/s' },
      { name: 'tidemark throughput, volume size / time to replica complete', value: mib / tm.replicaCompleteSeconds, unit: 'MiB/s', ...unseen(tm.replicaCompleteSeconds, 'the time to replica complete was not observed') },
      { name: 'agent CPU', value: tm.cpu.agent, unit: 's' },
      { name: 'process server CPU', value: tm.cpu.ps, unit: 's' },
      { name: 'master target CPU', value: tm.cpu.mt, unit: 's' },
      { name: 'agent CPU per GiB of volume', value: tm.cpu.agent / gib, unit: 's/GiB' },
      { name: 'process server CPU per GiB of volume', value: tm.cpu.ps / gib, unit: 's/GiB' },
      { name: 'master target CPU per GiB of volume', value: tm.cpu.mt / gib, unit: 's/GiB' },
      { name: 'all daemons CPU per GiB of volume', value: cpuTotal / gib, unit: 's/GiB' },
      { name: 'all daemons CPU per GiB of data sent', value: cpuTotal / (rawIn / GiB), unit: 's/GiB' },
      // 256 per MiB: every byte of the volume passed through fresh memory once in that daemon.
      { name: 'agent minor page faults per MiB of volume', value: tm.faults.agent / mib, unit: '1/MiB' },
      { name: 'process server minor page faults per MiB of volume', value: tm.faults.ps / mib, unit: '1/MiB' },
      { name: 'master target minor page faults per MiB of volume', value: tm.faults.mt / mib, unit: '1/MiB' },
      // Every page of the peak was faulted in once: 256 faults per MiB of it.
      { name: 'agent peak RSS', value: tm.peakRssMiB.agent, unit: 'MiB' },
      { name: 'process server peak RSS', value: tm.peakRssMiB.ps, unit: 'MiB' },
      { name: 'master target peak RSS', value: tm.peakRssMiB.mt, unit: 'MiB' },
      { name: 'raw bytes into the process server (rawBytesIn)', value: rawIn, unit: 'bytes' },
      { name: 'LZ4 stored bytes in the process server (storedBytesIn)', value: storedIn, unit: 'bytes' },
      { name: 'LZ4 ratio at the process server (rawBytesIn / storedBytesIn)', value: rawIn / storedIn, unit: 'x' },
      { name: 'wire agent → process server (agent uploader bytesSent)', value: num(uploader?.bytesSent), unit: 'bytes' },
      { name: 'wire agent → process server (ps receiver bytesReceived)', value: num(psReceiver?.bytesReceived), unit: 'bytes' },
      { name: 'wire process server → master target (forwarder bytesSent)', value: num(fwd?.bytesSent), unit: 'bytes' },
      { name: 'wire process server → master target (mt receiver bytesReceived)', value: num(mtReceiver?.bytesReceived), unit: 'bytes' },
      { name: 'differentials applied', value: num(vol0(tm.status.mt)?.appliedSeq), unit: 'count' },
      { name: 'replica equals source (sha256)', value: replicaEqual, unit: 'bool' },
    ];
    const references = [
      {
        name: 'raw sequential read',
        description: 'read the whole source image in 4 MiB chunks after one warming read (page cache)',
        figures: [
          { name: 'wall time', value: raw.seconds, unit: 's' },
          { name: 'throughput', value: rawMiBs, unit: 'MiB/s' },
        ],
      },
      {
        name: 'lz4 -1 | TCP | lz4 -d',
        description: 'lz4 -1 -c source | socat → TCP 127.0.0.1 → socat | lz4 -d -c > file; output checked by sha256',
        figures: [
          { name: 'wall time', value: lz.seconds, unit: 's' },
          { name: 'throughput of source bytes', value: lzMiBs, unit: 'MiB/s' },
          { name: 'CPU of all its processes', value: lz.cpuSeconds, unit: 's' },
          { name: 'CPU per GiB of volume', value: lz.cpuSeconds / gib, unit: 's/GiB' },
          { name: 'output equals source (sha256)', value: lz4Equal, unit: 'bool' },
        ],
      },
    ];
    const ratios = [
      { name: 'tidemark / lz4 pipeline (volume MiB/s)', numerator: 'tidemark throughput, volume size / time to converged', denominator: 'lz4 -1 | TCP | lz4 -d throughput of source bytes', value: volMiBs / lzMiBs, target: 0.6 },
      { name: 'tidemark / raw read (volume MiB/s)', numerator: 'tidemark throughput, volume size / time to converged', denominator: 'raw sequential read throughput', value: volMiBs / rawMiBs },
      { name: 'tidemark data sent / lz4 pipeline (MiB/s)', numerator: 'tidemark throughput, non-zero data sent / time to converged', denominator: 'lz4 -1 | TCP | lz4 -d throughput of source bytes', value: dataMiBs / lzMiBs },
      { name: 'tidemark CPU / lz4 pipeline CPU (per GiB of volume)', numerator: 'all daemons CPU per GiB of volume', denominator: 'lz4 -1 | TCP | lz4 -d CPU per GiB of volume', value: cpuTotal / lz.cpuSeconds },
    ];
    const ok = (b: boolean): string => (b ? 'sha256 equal' : 'SHA256 DIFFERS');
    const table = [
      ['run', 'wall s', 'MiB/s volume', 'MiB/s data', 'CPU s/GiB', 'faults/MiB', 'peak RSS MiB', 'result'],
      ['raw sequential read', fmt(raw.seconds, 2), fmt(rawMiBs), '-', '-', '-', '-', '-'],
      ['lz4 -1 | TCP | lz4 -d', fmt(lz.seconds, 2), fmt(lzMiBs), fmt(lzMiBs), fmt(lz.cpuSeconds / gib, 2), '-', '-', ok(lz4Equal)],
      ['tidemark, to converged', fmt(tm.convergedSeconds, 2), fmt(volMiBs), fmt(dataMiBs), fmt(cpuTotal / gib, 2), fmt((tm.faults.agent + tm.faults.ps + tm.faults.mt) / mib, 0), '-', ok(replicaEqual)],
      ['tidemark, to replica complete', fmt(tm.replicaCompleteSeconds, 2), fmt(mib / tm.replicaCompleteSeconds), fmt(rawIn / MiB / tm.replicaCompleteSeconds), '-', '-', '-', '-'],
      ['  agent', '-', '-', '-', fmt(tm.cpu.agent / gib, 2), fmt(tm.faults.agent / mib, 0), fmt(tm.peakRssMiB.agent, 0), Number.isFinite(tm.firstPassSeconds) ? `first pass ${fmt(tm.firstPassSeconds, 1)} s` : 'first pass not observed'],
      ['  process server', '-', '-', '-', fmt(tm.cpu.ps / gib, 2), fmt(tm.faults.ps / mib, 0), fmt(tm.peakRssMiB.ps, 0), `lz4 ${fmt(rawIn / MiB, 0)} → ${fmt(storedIn / MiB, 0)} MiB (${fmt(rawIn / storedIn, 2)}x)`],
      ['  master target', '-', '-', '-', fmt(tm.cpu.mt / gib, 2), fmt(tm.faults.mt / mib, 0), fmt(tm.peakRssMiB.mt, 0), `received ${fmt(num(mtReceiver?.bytesReceived) / MiB, 0)} MiB`],
    ];
    const version = (cmd: string, arg: string): string => {
      try {
        return /\d+\.\d+\.\d+(\.\d+)?/.exec(execFileSync(cmd, [arg], { encoding: 'utf8' }))?.[0] ?? 'unknown';
      } catch {
        return 'unknown';
      }
    };
    return {
      params: {
        volumeSizeMiB: mib,
        fileFill: FILL,
        textShareOfFiles: TEXT_SHARE,
        files: vol.files,
        textBytes: vol.textBytes,
        randomBytes: vol.randomBytes,
        nonZeroBytes: vol.nonZeroBytes,
        blockSizeForNonZeroCount: 4096,
        agentCycleIntervalMs: CYCLE_INTERVAL_MS,
        lz4: version('lz4', '--version'),
        socat: version('socat', '-V'),
        cpuProfiler: Boolean(process.env.TIDEMARK_BENCH_CPU_PROF),
      },
      figures,
      references,
      quoted: [],
      ratios,
      table,
      notes: [
        'MiB/s volume = volume size / wall time. Tidemark never sends zero blocks of a fresh volume (a new replica is a sparse file whose blocks are known to hash as zeros, so the initial resync finds them equal), while the lz4 pipeline moves every byte: "MiB/s data" is the non-zero data Tidemark actually sent (process server rawBytesIn) over the same time.',
        'Tidemark time runs from starting the three daemons to convergence: the agent rescanned the whole volume after the data was applied and found nothing new. "replica complete" is the first poll (250 ms) at which the master target had applied everything of the first pass.',
        'CPU = utime + stime of each daemon process (all threads) from /proc/<pid>/stat, read right before SIGTERM; it includes daemon start-up and the confirming rescan. The lz4 pipeline CPU is bash `times` over all its processes.',
        'The machine may be shared with other work: compare the ratios, measured in the same run, rather than absolute figures.',
      ],
    };
  } finally {
    if (!keep) {
      for (const f of [source, replica, lz4Out]) await fsp.rm(f, { force: true });
      await fsp.rm(path.join(dir, 'lab', 'agent-state'), { recursive: true, force: true });
      await fsp.rm(path.join(dir, 'lab', 'ps-cache'), { recursive: true, force: true });
      await fsp.rm(path.join(dir, 'lab', 'mt-state'), { recursive: true, force: true });
      await fsp.rm(path.join(dir, 'tree'), { recursive: true, force: true });
    }
  }
}
