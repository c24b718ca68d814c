// Data mode (tracker "data": every write captured with its data by eBPF) against no tracking and against
// blocktrace + reflink, on one protected loop device over an image on XFS, all in the same run:
//   1. fio 4 KiB random writes, QD16, O_DIRECT: IOPS and p99 latency, alternated OFF, DATA, BTR, OFF,
//      DATA, BTR (each ON run with all three daemons running and converged); then the same at a fixed
//      rate of half the first OFF run's IOPS (p99 latency at half rate).
//   2. RPO in data mode: a probe writes a marker block every 200 ms beside fio at 20 MB/s of 4 KiB random
//      writes, then at 100 MiB/s of 64 KiB writes; sample = replica first holds the probe write − the
//      probe write completed. Drops counted by the capture (kernel ring, reader queue).
//   3. Agent CPU seconds per GiB written in data mode (the DATA IOPS runs).
//   4. A freeze tag's hold: ext4 (4 KiB blocks) on the device, capture "freeze" each second under 20 MB/s
//      of buffered 4 KiB random writes; the agent's own hold figures (FIFREEZE called → FITHAW returned).
// Needs root, fio, mkfs.xfs, mkfs.ext4, losetup and data mode (BTF, the BPF object built).
import { execFileSync } from 'node:child_process';
import { promises as fsp, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dataPinName } from '../agent/trackers/data.js';
import { Lab } from '../lab/lab.js';
import { dataModeUnavailable, ensureBpffs } from '../native/datacap.js';
import { bin, quietly, sh, unmountAndDetach, version } from './system.js';
import { benchSizeMiB, fmt, GiB, MiB, WORK_DIR, type BenchResult, type Benchmark, type Figure, type Ratio } from './harness.js';
import { checkAlive, cpuNow, fio, median, quantile, rpoRun, setup, stageMaxMiB, waitConverged, type FioRun, type RpoRun, type Setup } from './tracking.js';

const FIO_SECONDS = 10;
const CYCLE_INTERVAL_MS = 1000;
const DATA_VOLUME = 'bench-data';
const BTR_VOLUME = 'bench-btr';
const TAG_VOLUME = 'bench-tag';
const INSTANCES = '/sys/kernel/tracing/instances';
const CONVERGE_TIMEOUT_MS = 240_000;
const RPO_4K_RATE = Math.round((20 * 1e6) / 4096); // 20 MB/s of 4 KiB writes (ASR's per-disk churn limit)
const RPO_64K_RATE = Math.round((100 * MiB) / 65536); // 100 MiB/s of 64 KiB writes
const TAG_SECONDS = 25;
const DATA_SETTINGS = { ringMiB: 256, queueMiB: 512, fifoPriority: 1 };
const TARGETS = { iops: 0.9, p99: 1.1, rpoS: 2, tagMs: 50 };
/** TIDEMARK_DATA_MODE_RPO_ONLY=1: only part 2, the RPO runs (a quicker comparison of the data path). */
const RPO_ONLY = process.env.TIDEMARK_DATA_MODE_RPO_ONLY === '1';

export const dataMode: Benchmark = {
  description: 'data mode (eBPF write capture) vs no tracking vs blocktrace + reflink: fio 4 KiB random-write IOPS and p99 at half rate, RPO at 20 MB/s 4K and 100 MiB/s 64K, drops, agent CPU per GiB, freeze tag hold',
  run,
};

type Mode = 'OFF' | 'DATA' | 'BTR';
interface Run { mode: Mode; index: number; fio: FioRun; agentCpuS: number; drops: number; bytes: number }

function requirements(): void {
  const missing = ['fio', 'mkfs.xfs', 'mkfs.ext4', 'losetup', 'mount', 'umount'].filter((t) => bin(t) === null);
  if (missing.length > 0) throw new Error(`data-mode needs ${missing.join(', ')} on PATH`);
  const why = dataModeUnavailable();
  if (why) throw new Error(`data-mode: data mode cannot run here: ${why}`);
}

function removeBlocktraceInstances(): void {
  let names: string[] = [];
  try {
    names = readdirSync(INSTANCES).filter((n) => n.startsWith(`tidemark.${BTR_VOLUME}.`));
  } catch {
    return;
  }
  for (const n of names) quietly(`rmdir ${n}`, () => execFileSync('rmdir', [path.join(INSTANCES, n)], { stdio: 'pipe' }));
}

/** The capture outlives the agent by design (pinned in bpffs): a benchmark's must not outlive its session. */
function removePins(labDir: string, volume: string): void {
  rmSync(path.join(ensureBpffs(), dataPinName(path.join(labDir, 'agent-state', 'volumes', volume))), { recursive: true, force: true });
}

type Status = Record<string, unknown>;
const vol0 = async (lab: Lab): Promise<Status | undefined> => ((await lab.status('agent'))?.volumes as Status[] | undefined)?.[0];
const trackerDrops = async (lab: Lab): Promise<number> => {
  const s = (await vol0(lab))?.trackerStats as Record<string, number> | undefined;
  return s ? (s.drops ?? 0) + (s.userDrops ?? 0) : NaN;
};

const PRELOAD = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'cpu-prof-preload.js')).href;

async function startLab(lab: Lab, dir: string): Promise<number> {
  const t0 = Date.now();
  // TIDEMARK_BENCH_CPU_PROF=1: V8 profiles of the three daemons, read with node dist/bench/cpuprofile.js;
  // the agent's from 20 s after its start (the profiler's signals interrupt the BPF verifier).
  const profDir = process.env.TIDEMARK_BENCH_CPU_PROF ? path.join(dir, 'profiles') : null;
  if (profDir) await fsp.mkdir(profDir, { recursive: true });
  const prof = profDir ? { NODE_OPTIONS: `--import=${PRELOAD}`, TIDEMARK_CPU_PROF_DIR: profDir } : {};
  for (const n of ['mt', 'ps', 'agent'] as const) lab.start(n, n === 'agent' && profDir ? { ...prof, TIDEMARK_CPU_PROF_DELAY_MS: '20000' } : prof);
  await lab.waitConverged(t0, CONVERGE_TIMEOUT_MS, () => checkAlive(lab, dir));
  return (Date.now() - t0) / 1000;
}

async function measure(mode: Mode, index: number, s: Setup, lab: Lab | null, extra: string[] = []): Promise<Run> {
  sh('sync', '-f', s.mnt);
  const c0 = lab ? cpuNow(lab).agent : NaN;
  const d0 = lab && mode === 'DATA' ? await trackerDrops(lab) : NaN;
  const r = await fio(s.dev, FIO_SECONDS, extra);
  const c1 = lab ? cpuNow(lab).agent : NaN;
  const d1 = lab && mode === 'DATA' ? await trackerDrops(lab) : NaN;
  const run: Run = { mode, index, fio: r, agentCpuS: c1 - c0, drops: d1 - d0, bytes: r.totalIos * 4096 };
  console.log(`    ${mode} #${index}${extra.length ? ` (${extra.join(' ')})` : ''}: ${fmt(r.iops, 0)} IOPS, p99 ${fmt(r.p99us, 1)} µs${lab ? `, agent ${fmt(run.agentCpuS, 2)} CPU s` : ''}${mode === 'DATA' ? `, drops ${fmt(run.drops, 0)}` : ''}`);
  return run;
}

interface TagResult { stats: Record<string, number | null>; tags: number; fioIops: number }

async function tagHold(s: Setup, dir: string): Promise<TagResult> {
  const mnt = path.join(dir, 'ext4');
  await fsp.mkdir(mnt, { recursive: true });
  sh('mkfs.ext4', '-q', '-F', '-b', '4096', s.dev);
  sh('mount', s.dev, mnt);
  const labDir = path.join(dir, 'lab-tag');
  const lab = await Lab.create({
    dir: labDir,
    volumes: [{ id: TAG_VOLUME, source: s.dev, replica: path.join(s.mnt, 'replica-tag.img'), agent: { tracker: 'data', capture: 'freeze', freeze: { mountpoint: mnt, tag: 'bench', tagIntervalMs: 1000, timeoutMs: 5000 } } }],
    agent: { cycleIntervalMs: CYCLE_INTERVAL_MS, data: DATA_SETTINGS },
  });
  try {
    console.log(`    converged in ${fmt(await startLab(lab, labDir), 1)} s`);
    const r = await fio(path.join(mnt, 'fio.dat'), TAG_SECONDS, ['--direct=0', '--size=64m', '--rate=20m', '--ioengine=psync', '--iodepth=1', '--fsync=64']);
    await sleep(2000);
    const v = await vol0(lab);
    const stats = (v?.captureStats ?? {}) as Record<string, number | null>;
    const tags = (await lab.logLines('mt')).filter((l) => l.msg === 'differential applied' && l.consistency === 'APP').length;
    return { stats, tags, fioIops: r.iops };
  } finally {
    await lab.stopAll().catch(() => {});
    removePins(labDir, TAG_VOLUME);
    quietly(`umount ${mnt}`, () => sh('umount', mnt));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** A daemon's minor page faults during an RPO run per MiB fio wrote (4 KiB pages: 256 per MiB is every byte in fresh memory once). */
const STAGE_NAMES = { capture: "agent's capture queue", journal: "agent's journal", ps: "process server's cache", mt: "master target's staging" } as const;
const faultsPerMiB = (r: RpoRun, n: 'agent' | 'ps' | 'mt'): number => r.faults[n] / (r.fio.bytes / MiB);

async function run(): Promise<BenchResult> {
  requirements();
  const sizeMiB = benchSizeMiB(256, 'room for fio beside the probe block, and ext4 with 4 KiB blocks for the tag');
  const dir = path.join(WORK_DIR, 'data-mode');
  unmountAndDetach(dir);
  removeBlocktraceInstances();
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const runs: Run[] = [];
  const half: Run[] = [];
  const rpo: Array<{ what: string; r: RpoRun; drops: number }> = [];
  const converge: Array<{ what: string; seconds: number }> = [];
  let tag: TagResult | null = null;
  let s: Setup | null = null;
  const labs: Lab[] = [];
  try {
    console.log(`setup: XFS (reflink) in a loop-mounted image, a ${sizeMiB} MiB image on it, a loop device over that`);
    s = await setup(dir, sizeMiB);
    const dataDir = path.join(dir, 'lab-data');
    const btrDir = path.join(dir, 'lab-btr');
    const dataLab = await Lab.create({ dir: dataDir, volumes: [{ id: DATA_VOLUME, source: s.dev, replica: path.join(s.mnt, 'replica-data.img'), agent: { tracker: 'data', capture: 'none' } }], agent: { cycleIntervalMs: CYCLE_INTERVAL_MS, data: DATA_SETTINGS } });
    const btrLab = await Lab.create({ dir: btrDir, volumes: [{ id: BTR_VOLUME, source: s.dev, replica: path.join(s.mnt, 'replica-btr.img'), agent: { tracker: 'blocktrace', capture: 'reflink' } }], agent: { cycleIntervalMs: CYCLE_INTERVAL_MS } });
    labs.push(dataLab, btrLab);
    const session = async (mode: 'DATA' | 'BTR', body: (lab: Lab) => Promise<void>): Promise<void> => {
      const lab = mode === 'DATA' ? dataLab : btrLab;
      const d = mode === 'DATA' ? dataDir : btrDir;
      console.log(`  ${mode}: starting the daemons (initial sync)...`);
      converge.push({ what: `${mode} session ${converge.length + 1}`, seconds: await startLab(lab, d) });
      try {
        await body(lab);
      } finally {
        await lab.stopAll();
        if (mode === 'DATA') removePins(dataDir, DATA_VOLUME);
        else removeBlocktraceInstances();
      }
    };

    if (!RPO_ONLY) console.log(`\n1. fio 4 KiB random writes, QD16, ${FIO_SECONDS} s each, alternated`);
    if (!RPO_ONLY) runs.push(await measure('OFF', 1, s, null));
    const rate = RPO_ONLY ? 0 : Math.floor(runs[0]!.fio.iops / 2);
    if (!RPO_ONLY) half.push(await measure('OFF', 1, s, null, [`--rate_iops=${rate}`]));
    await session('DATA', async (lab) => {
      if (!RPO_ONLY) {
        runs.push(await measure('DATA', 1, s!, lab));
        await waitConverged(lab, dataDir);
        half.push(await measure('DATA', 1, s!, lab, [`--rate_iops=${rate}`]));
      }
      console.log('\n2. RPO in data mode');
      for (const [i, [what, iops, extra]] of ([['20 MB/s 4K random', RPO_4K_RATE, []], ['100 MiB/s 64K', RPO_64K_RATE, ['--bs=64k']]] as Array<[string, number, string[]]>).entries()) {
        await waitConverged(lab, dataDir);
        const d0 = await trackerDrops(lab);
        const r = await rpoRun(lab, s!.dev, path.join(s!.mnt, 'replica-data.img'), s!.sizeBytes, iops, i + 1, extra);
        const drops = (await trackerDrops(lab)) - d0;
        console.log(`    ${what}: fio ${fmt(r.fio.iops, 0)} IOPS; RPO p50 ${fmt(median(r.samples), 2)} s, p99 ${fmt(quantile(r.samples, 0.99), 2)} s over ${r.samples.length} probe writes${r.neverSeen ? ` (${r.neverSeen} never seen)` : ''}; drops ${drops}; CPU agent ${fmt(r.cores.agent, 2)} ps ${fmt(r.cores.ps, 2)} mt ${fmt(r.cores.mt, 2)} cores; ${fmt(r.appliedBytes / GiB, 2)} GiB applied, CPU per GiB ps ${fmt(r.cpuS.ps / (r.appliedBytes / GiB), 2)} mt ${fmt(r.cpuS.mt / (r.appliedBytes / GiB), 2)} s; page faults per MiB written agent ${fmt(faultsPerMiB(r, 'agent'), 0)} ps ${fmt(faultsPerMiB(r, 'ps'), 0)} mt ${fmt(faultsPerMiB(r, 'mt'), 0)}`);
        const q = stageMaxMiB(r);
        console.log(`      most queued (MiB): capture ${fmt(q.capture, 0)}, agent journal ${fmt(q.journal, 0)}, process server cache ${fmt(q.ps, 0)}, master target staging ${fmt(q.mt, 0)}`);
        if (process.env.TIDEMARK_BENCH_STAGES === '1') for (const x of r.stageMiB) console.log(`      t=${fmt(x.t, 1)} capture ${fmt(x.capture, 0)} journal ${fmt(x.journal, 0)} ps ${fmt(x.ps, 0)} mt ${fmt(x.mt, 0)}`);
        rpo.push({ what, r, drops });
      }
    });
    if (RPO_ONLY) return report({ sizeMiB, runs, half, rpo, converge, tag, rate });
    await session('BTR', async (lab) => {
      runs.push(await measure('BTR', 1, s!, lab));
      await waitConverged(lab, btrDir);
      half.push(await measure('BTR', 1, s!, lab, [`--rate_iops=${rate}`]));
    });
    runs.push(await measure('OFF', 2, s, null));
    await session('DATA', async (lab) => {
      runs.push(await measure('DATA', 2, s!, lab));
    });
    await session('BTR', async (lab) => {
      runs.push(await measure('BTR', 2, s!, lab));
    });
    console.log('\n4. freeze tag hold: ext4 (4 KiB blocks) on the device, capture "freeze" every second, 20 MB/s buffered 4K writes');
    tag = await tagHold(s, dir);
    console.log(`    ${tag.stats.freezes} freezes, ${tag.stats.points} tags made, ${tag.stats.failures} dropped; hold p50 ${tag.stats.holdP50Ms} ms p99 ${tag.stats.holdP99Ms} ms max ${tag.stats.maxHoldMs} ms; after FIFREEZE p50 ${tag.stats.frozenP50Ms} ms`);
  } finally {
    for (const l of labs) await l.stopAll().catch(() => {});
    removePins(path.join(dir, 'lab-data'), DATA_VOLUME);
    removePins(path.join(dir, 'lab-tag'), TAG_VOLUME);
    removeBlocktraceInstances();
    unmountAndDetach(dir);
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') {
      await fsp.rm(path.join(dir, 'xfs.img'), { force: true });
      await fsp.rm(path.join(dir, 'xfs'), { recursive: true, force: true });
      for (const l of ['lab-data', 'lab-btr', 'lab-tag']) for (const d of ['agent-state', 'ps-cache', 'mt-state', 'pki']) await fsp.rm(path.join(dir, l, d), { recursive: true, force: true });
    }
  }
  return report({ sizeMiB, runs, half, rpo, converge, tag, rate: Math.floor(runs[0]!.fio.iops / 2) });
}

function report(x: { sizeMiB: number; runs: Run[]; half: Run[]; rpo: Array<{ what: string; r: RpoRun; drops: number }>; converge: Array<{ what: string; seconds: number }>; tag: TagResult | null; rate: number }): BenchResult {
  const of = (m: Mode): Run[] => x.runs.filter((r) => r.mode === m);
  const iops = (m: Mode): number => median(of(m).map((r) => r.fio.iops));
  const p99 = (m: Mode): number => median(of(m).map((r) => r.fio.p99us));
  const halfOf = (m: Mode): Run | undefined => x.half.find((r) => r.mode === m);
  const figures: Figure[] = [];
  const table: string[][] = [['case', 'IOPS', 'p99 µs', 'vs OFF', 'detail']];
  for (const r of x.runs) {
    const L = `[${r.mode} #${r.index}]`;
    figures.push({ name: `${L} fio write IOPS`, value: r.fio.iops, unit: 'IOPS' }, { name: `${L} fio p99 completion latency`, value: r.fio.p99us, unit: 'µs' });
    if (r.mode === 'DATA') figures.push({ name: `${L} drops (kernel ring + reader queue)`, value: r.drops, unit: 'count' }, { name: `${L} agent CPU seconds`, value: r.agentCpuS, unit: 's' });
    table.push([`${r.mode} #${r.index}`, fmt(r.fio.iops, 0), fmt(r.fio.p99us, 1), fmt(r.fio.iops / iops('OFF'), 3), r.mode === 'DATA' ? `drops ${r.drops}, agent ${fmt(r.agentCpuS, 2)} CPU s` : r.mode === 'BTR' ? `agent ${fmt(r.agentCpuS, 2)} CPU s` : 'no daemons']);
  }
  for (const m of ['OFF', 'DATA', 'BTR'] as Mode[]) {
    figures.push({ name: `median fio write IOPS, ${m}`, value: iops(m), unit: 'IOPS' }, { name: `median fio p99 completion latency, ${m}`, value: p99(m), unit: 'µs' });
    const h = halfOf(m);
    if (h) {
      figures.push({ name: `fio p99 completion latency at half rate (${x.rate} IOPS), ${m}`, value: h.fio.p99us, unit: 'µs' }, { name: `fio IOPS achieved at half rate, ${m}`, value: h.fio.iops, unit: 'IOPS' });
      table.push([`${m} at half rate (${x.rate} IOPS)`, fmt(h.fio.iops, 0), fmt(h.fio.p99us, 1), fmt(h.fio.p99us / (halfOf('OFF')?.fio.p99us ?? NaN), 3), 'vs OFF: p99 ratio']);
    }
  }
  const dataRuns = of('DATA');
  const cpuPerGiB = dataRuns.reduce((a, r) => a + r.agentCpuS, 0) / (dataRuns.reduce((a, r) => a + r.bytes, 0) / GiB);
  const dataDrops = dataRuns.reduce((a, r) => a + r.drops, 0) + x.rpo.reduce((a, r) => a + r.drops, 0);
  figures.push({ name: 'agent CPU seconds per GiB written, data mode (DATA IOPS runs)', value: cpuPerGiB, unit: 's/GiB' }, { name: 'drops', value: dataDrops, unit: 'count' });
  const rpoP99: Record<string, number> = {};
  for (const { what, r, drops } of x.rpo) {
    const L = `[RPO ${what}]`;
    rpoP99[what] = quantile(r.samples, 0.99);
    figures.push(
      { name: `${L} fio IOPS achieved`, value: r.fio.iops, unit: 'IOPS' },
      { name: `${L} RPO p50`, value: median(r.samples), unit: 's' },
      { name: `RPO p99 at ${what === '20 MB/s 4K random' ? '20 MB/s 4K random' : '100 MiB/s 64K'}`, value: rpoP99[what]!, unit: 's' },
      { name: `${L} RPO max`, value: r.samples.length ? Math.max(...r.samples) : NaN, unit: 's' },
      { name: `${L} probe writes never seen`, value: r.neverSeen, unit: 'count' },
      { name: `${L} drops`, value: drops, unit: 'count' },
      { name: `${L} agent CPU`, value: r.cores.agent, unit: 'cores' },
      { name: `${L} process server CPU`, value: r.cores.ps, unit: 'cores' },
      { name: `${L} master target CPU`, value: r.cores.mt, unit: 'cores' },
      { name: `${L} agent minor page faults per MiB written`, value: faultsPerMiB(r, 'agent'), unit: '1/MiB' },
      { name: `${L} process server minor page faults per MiB written`, value: faultsPerMiB(r, 'ps'), unit: '1/MiB' },
      { name: `${L} master target minor page faults per MiB written`, value: faultsPerMiB(r, 'mt'), unit: '1/MiB' },
      { name: `${L} differentials applied`, value: r.applied, unit: 'count' },
      { name: `${L} GiB applied`, value: r.appliedBytes / GiB, unit: 'GiB' },
      { name: `${L} process server CPU per GiB applied`, value: r.cpuS.ps / (r.appliedBytes / GiB), unit: 's/GiB' },
      { name: `${L} master target CPU per GiB applied`, value: r.cpuS.mt / (r.appliedBytes / GiB), unit: 's/GiB' },
      ...(['capture', 'journal', 'ps', 'mt'] as const).map((k) => ({ name: `${L} most queued: ${STAGE_NAMES[k]}`, value: stageMaxMiB(r)[k], unit: 'MiB' })),
    );
    table.push([`RPO at ${what}`, fmt(r.fio.iops, 0), fmt(r.fio.p99us, 1), '-', `RPO p50 ${fmt(median(r.samples), 2)} s, p99 ${fmt(rpoP99[what], 2)} s (n=${r.samples.length}${r.neverSeen ? `, ${r.neverSeen} unseen` : ''}), drops ${drops}, agent ${fmt(r.cores.agent, 2)} cores`]);
  }
  const t = x.tag?.stats ?? {};
  const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
  figures.push(
    { name: 'tag hold', value: num(t.holdP50Ms), unit: 'ms', note: 'median, FIFREEZE called to FITHAW returned (the most the application waits)' },
    { name: 'tag hold p99', value: num(t.holdP99Ms), unit: 'ms' },
    { name: 'tag hold max', value: num(t.maxHoldMs), unit: 'ms' },
    { name: 'tag time after FIFREEZE returned (marker + FITHAW), median', value: num(t.frozenP50Ms), unit: 'ms' },
    { name: 'tags made', value: num(t.points), unit: 'count' },
    { name: 'tags dropped', value: num(t.failures), unit: 'count' },
  );
  table.push(['freeze tag (ext4, 20 MB/s)', '-', '-', '-', `hold p50 ${fmt(num(t.holdP50Ms), 1)} ms, p99 ${fmt(num(t.holdP99Ms), 1)} ms, max ${fmt(num(t.maxHoldMs), 1)} ms; after FIFREEZE p50 ${fmt(num(t.frozenP50Ms), 1)} ms; ${fmt(num(t.points), 0)} tags, ${fmt(num(t.failures), 0)} dropped`]);
  const ratios: Ratio[] = [
    { name: 'IOPS data mode / OFF', numerator: 'median fio write IOPS, DATA', denominator: 'median fio write IOPS, OFF', value: iops('DATA') / iops('OFF'), target: TARGETS.iops },
    { name: 'IOPS blocktrace+reflink / OFF', numerator: 'median fio write IOPS, BTR', denominator: 'median fio write IOPS, OFF', value: iops('BTR') / iops('OFF') },
    { name: 'p99 latency at half rate, data mode / OFF', numerator: 'fio p99 completion latency at half rate, DATA', denominator: 'fio p99 completion latency at half rate, OFF', value: (halfOf('DATA')?.fio.p99us ?? NaN) / (halfOf('OFF')?.fio.p99us ?? NaN) },
    { name: 'p99 latency at half rate, blocktrace+reflink / OFF', numerator: 'fio p99 completion latency at half rate, BTR', denominator: 'fio p99 completion latency at half rate, OFF', value: (halfOf('BTR')?.fio.p99us ?? NaN) / (halfOf('OFF')?.fio.p99us ?? NaN) },
  ];
  for (const c of x.converge) figures.push({ name: `daemons converged: ${c.what}`, value: c.seconds, unit: 's' });
  return {
    ...(RPO_ONLY && { resultsName: 'data-mode-rpo' }),
    params: {
      volumeBytes: x.sizeMiB * MiB,
      fio: { version: version('fio', '--version'), seconds: FIO_SECONDS, iodepth: 16, bs: 4096, ioengine: 'libaio', direct: 1, halfRateIops: x.rate },
      order: ['OFF #1', 'OFF half', 'DATA #1', 'DATA half', 'RPO 4K', 'RPO 64K', 'BTR #1', 'BTR half', 'OFF #2', 'DATA #2', 'BTR #2', 'tag'],
      agent: { cycleIntervalMs: CYCLE_INTERVAL_MS, data: DATA_SETTINGS },
      rpo: { rate4kIops: RPO_4K_RATE, rate64kIops: RPO_64K_RATE },
      targets: { 'IOPS data mode / OFF': `≥ ${TARGETS.iops}`, 'p99 latency at half rate, data mode / OFF': `≤ ${TARGETS.p99}`, 'RPO p99': `≤ ${TARGETS.rpoS} s`, 'tag hold': `≤ ${TARGETS.tagMs} ms` },
    },
    figures,
    references: [],
    quoted: [],
    ratios,
    table,
    notes: [
      ...(['DATA', 'BTR'] as Mode[]).filter((m) => (halfOf(m)?.fio.iops ?? Infinity) < 0.95 * x.rate).map((m) => `${m} did not reach the half rate (${fmt(halfOf(m)!.fio.iops, 0)} of ${x.rate} IOPS): its "half rate" p99 is at its own saturation, not at the same load as OFF.`),
      `Setup: XFS (reflink) in a loop-mounted sparse image under bench/work/data-mode, a ${x.sizeMiB} MiB sparse image on it and the protected loop device over it; replicas on the same XFS. fio on the loop device: --direct=1 --rw=randwrite --bs=4k --ioengine=libaio --iodepth=16, ${FIO_SECONDS} s. OFF = no daemons; DATA = tracker "data", capture "none" (ring ${DATA_SETTINGS.ringMiB} MiB, reader SCHED_FIFO ${DATA_SETTINGS.fifoPriority}); BTR = tracker "blocktrace", capture "reflink" (a FICLONE of the image every cycle). Each ON session starts the three daemons and waits for convergence; the capture's pins and the tracefs instance are removed between sessions. Medians over the alternated runs.`,
      `Half rate = fio --rate_iops=${x.rate} (half the first OFF run's IOPS), p99 completion latency compared with OFF at the same rate.`,
      'RPO: a probe writes a 4 KiB marker at offset 0 every 200 ms and fsyncs; a poller reads the replica file at offset 0 every 50 ms; sample = replica holds the write (or a later one) − the write completed. All three daemons on this machine, sharing its cores with fio.',
      'Tag: ext4 -b 4096 on the device, tracker "data", capture "freeze" with tagIntervalMs 1000, fio buffered 4 KiB random writes at 20 MB/s into a 64 MiB file with an fsync every 64 writes. Hold = FIFREEZE called to FITHAW returned, from the agent\'s captureStats; FIFREEZE alone takes most of it on this kernel.',
      'The machine is shared (2 cores): compare ratios within the run.',
    ],
  };
}
