// What data mode's capture alone costs the protected workload, and where that cost goes: the kernel
// programs (run time per request, from kernel.bpf_stats_enabled), the reader thread (CPU, context
// switches), and a consumer on Node's main thread doing what the agent does with the records (take,
// parse). No daemons: the pipeline after the take (journal, network, apply) is `data-mode`'s business.
//   1. fio 4 KiB random writes, QD16, O_DIRECT on a loop device over an image on XFS: IOPS alternated
//      OFF, CAP, OFF, CAP, OFF, CAP (CAP: the capture attached and drained), ratio of medians.
//   2. fio 64 KiB writes at 100 MiB/s with the consumer taking at the agent's cadence (one collection of
//      up to 32 MiB, maxDiffBytes, per cycle of 1 s): drops by the reader, and the consumer's CPU per MiB
//      taking it as the agent does (takeRecords: 4 MiB native takes) against one native take of 32 MiB,
//      alternated (a buffer of tens of MiB is mapped fresh by every take; its pages cost the CPU).
// Needs root, fio, mkfs.xfs, losetup and data mode.
import { readFileSync, writeFileSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { DataCapture, dataModeUnavailable, DC_HDR, ensureBpffs, parseRecords } from '../native/datacap.js';
import { bin, sh, unmountAndDetach, version } from './system.js';
import { benchSizeMiB, fmt, MiB, WORK_DIR, type BenchResult, type Benchmark, type Figure, type Ratio } from './harness.js';
import { fio, median, setup, type FioRun } from './tracking.js';

const FIO_SECONDS = 10;
const ROUNDS = 3;
const RING_MIB = 256;
const QUEUE_MIB = 512;
/** The consumer's take cadence in the IOPS runs (the agent takes while `more`, then waits for the next cycle). */
const TAKE_EVERY_MS = 20;
const BURST_ROUNDS = 2;
const TAKE_LABEL: Record<'agent' | 'single', string> = { agent: '4 MiB takes (agent)', single: 'one 32 MiB take' };
/** The consumer's (main thread's) CPU per MiB of records it took, in ms. */
const perMiB = (c: { consumerCpuS: number; bytes: number }): number => (c.consumerCpuS * 1000) / (c.bytes / MiB);
const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';

export const dataCapture: Benchmark = {
  description: 'data-mode capture alone (no daemons): fio 4 KiB random-write IOPS with the capture attached and drained vs none, BPF ns per request, reader thread CPU and wakeups, consumer CPU; reader drops at 100 MiB/s of 64 KiB writes',
  run,
};

function threadCpu(tid: number): { cpuS: number; switches: number } {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    const sw = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
    return { cpuS: (Number(f[11]) + Number(f[12])) / 100, switches: sw('voluntary_ctxt_switches') + sw('nonvoluntary_ctxt_switches') };
  } catch {
    return { cpuS: NaN, switches: NaN };
  }
}

interface CapRun {
  fio: FioRun;
  /** Issue and completion programs: ns per run. */
  issueNs: number;
  endNs: number;
  requests: number;
  readerCpuS: number;
  readerSwitches: number;
  consumerCpuS: number;
  takes: number;
  records: number;
  /** Record bytes taken (headers and data). */
  bytes: number;
  drops: number;
  userDrops: number;
}

function devNumbers(dev: string): { major: number; minor: number } {
  const [major, minor] = readFileSync(`/sys/class/block/${path.basename(dev)}/dev`, 'utf8').trim().split(':').map(Number) as [number, number];
  return { major, minor };
}

/** How the consumer takes: as the agent does (takeRecords, in TAKE_BYTES pieces), or in one native take. */
type TakeMode = 'agent' | 'single';
const COLLECTION_BYTES = 32 * MiB;

function takeAll(cap: DataCapture, mode: TakeMode): { takes: number; records: number; bytes: number } {
  const out = { takes: 0, records: 0, bytes: 0 };
  for (;;) {
    const recs = mode === 'agent' ? cap.takeRecords(COLLECTION_BYTES) : parseRecords(cap.take(COLLECTION_BYTES));
    if (recs.length === 0) return out;
    out.takes++;
    out.records += recs.length;
    for (const r of recs) out.bytes += DC_HDR + (r.data?.length ?? 0);
  }
}

async function withCapture(dev: string, sizeBytes: number, takeEveryMs: number, body: () => Promise<FioRun>, mode: TakeMode = 'agent'): Promise<CapRun> {
  const pinDir = path.join(ensureBpffs(), `tm-bench-capture-${process.pid}`);
  const cap = DataCapture.open(dev, { pinDir, ...devNumbers(dev), startByte: 0, endByte: sizeBytes, chunkShift: 12, ringBytes: RING_MIB * MiB, maxQueueBytes: QUEUE_MIB * MiB, fifoPriority: 1, resume: false });
  try {
    const s0 = cap.stats();
    const tid = s0.readerTid;
    const r0 = threadCpu(tid);
    const m0 = threadCpu(process.pid);
    let stop = false;
    let takes = 0;
    let records = 0;
    let bytes = 0;
    // The consumer: take everything queued, parse it (what the agent does before building extents).
    const consumer = (async () => {
      while (!stop) {
        const got = takeAll(cap, mode);
        takes += got.takes;
        records += got.records;
        bytes += got.bytes;
        await new Promise((r) => setTimeout(r, takeEveryMs));
      }
    })();
    const f = await body();
    stop = true;
    await consumer;
    const s1 = cap.stats();
    const r1 = threadCpu(tid);
    const m1 = threadCpu(process.pid);
    const issues = s1.issueRuns - s0.issueRuns;
    const ends = s1.endRuns - s0.endRuns;
    return {
      fio: f,
      issueNs: issues > 0 ? (s1.issueRunNs - s0.issueRunNs) / issues : NaN,
      endNs: ends > 0 ? (s1.endRunNs - s0.endRunNs) / ends : NaN,
      requests: s1.completions - s0.completions,
      readerCpuS: r1.cpuS - r0.cpuS,
      readerSwitches: r1.switches - r0.switches,
      consumerCpuS: m1.cpuS - m0.cpuS,
      takes,
      records,
      bytes,
      drops: s1.drops - s0.drops,
      userDrops: s1.userDrops - s0.userDrops,
    };
  } finally {
    cap.close(true);
  }
}

async function run(): Promise<BenchResult> {
  const missing = ['fio', 'mkfs.xfs', 'losetup'].filter((t) => bin(t) === null);
  if (missing.length > 0) throw new Error(`data-capture needs ${missing.join(', ')} on PATH`);
  const why = dataModeUnavailable();
  if (why) throw new Error(`data-capture: data mode cannot run here: ${why}`);
  const sizeMiB = benchSizeMiB(256, 'room for fio');
  const dir = path.join(WORK_DIR, 'data-capture');
  unmountAndDetach(dir);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const statsWas = readFileSync(STATS_SYSCTL, 'utf8').trim();
  writeFileSync(STATS_SYSCTL, '1');
  const off: FioRun[] = [];
  const on: CapRun[] = [];
  let burst: CapRun | null = null;
  const bursts: Record<TakeMode, CapRun[]> = { agent: [], single: [] };
  const order: string[] = [];
  try {
    const s = await setup(dir, sizeMiB);
    // Allocate the image first so OFF and CAP runs write the same (already allocated) blocks.
    await fio(s.dev, 3, ['--rw=write', '--bs=1m', '--iodepth=4']);
    for (let i = 1; i <= ROUNDS; i++) {
      sh('sync', '-f', s.mnt);
      const o = await fio(s.dev, FIO_SECONDS);
      off.push(o);
      order.push(`OFF #${i}`);
      console.log(`    OFF #${i}: ${fmt(o.iops, 0)} IOPS, p99 ${fmt(o.p99us, 1)} µs`);
      sh('sync', '-f', s.mnt);
      const c = await withCapture(s.dev, s.sizeBytes, TAKE_EVERY_MS, () => fio(s.dev, FIO_SECONDS));
      on.push(c);
      order.push(`CAP #${i}`);
      console.log(`    CAP #${i}: ${fmt(c.fio.iops, 0)} IOPS, p99 ${fmt(c.fio.p99us, 1)} µs; BPF ${fmt(c.issueNs, 0)} + ${fmt(c.endNs, 0)} ns/request; reader ${fmt(c.readerCpuS, 2)} CPU s, ${c.readerSwitches} switches; consumer ${fmt(c.consumerCpuS, 2)} CPU s, ${c.takes} takes; drops ${c.drops}+${c.userDrops}`);
    }
    sh('sync', '-f', s.mnt);
    // 100 MiB/s of 64 KiB writes, the consumer taking once a second (a cycle), alternating how it takes.
    for (let i = 1; i <= BURST_ROUNDS; i++) {
      for (const mode of ['single', 'agent'] as const) {
        sh('sync', '-f', s.mnt);
        const b = await withCapture(s.dev, s.sizeBytes, 1000, () => fio(s.dev, FIO_SECONDS, ['--bs=64k', '--rw=randwrite', `--rate=${100 * MiB}`]), mode);
        bursts[mode].push(b);
        if (mode === 'agent') burst = b;
        order.push(`64K at 100 MiB/s, one collection a second, ${TAKE_LABEL[mode]} #${i}`);
        console.log(`    64K (${TAKE_LABEL[mode]}) #${i}: ${fmt(b.fio.iops, 0)} IOPS; reader ${fmt(b.readerCpuS, 2)} CPU s, ${b.readerSwitches} switches; consumer ${fmt(perMiB(b), 2)} ms CPU per MiB taken, ${b.takes} collections; drops ${b.drops}+${b.userDrops}`);
      }
    }
  } finally {
    writeFileSync(STATS_SYSCTL, statsWas);
    unmountAndDetach(dir);
  }
  const figures: Figure[] = [];
  const add = (name: string, value: number, unit: string): void => void figures.push({ name, value, unit });
  off.forEach((o, i) => add(`[OFF #${i + 1}] fio write IOPS`, o.iops, 'IOPS'));
  on.forEach((c, i) => {
    const n = `[CAP #${i + 1}]`;
    add(`${n} fio write IOPS`, c.fio.iops, 'IOPS');
    add(`${n} BPF issue program per request`, c.issueNs, 'ns');
    add(`${n} BPF completion program per request`, c.endNs, 'ns');
    add(`${n} reader thread CPU per second`, c.readerCpuS / c.fio.seconds, 's/s');
    add(`${n} reader thread context switches per second`, c.readerSwitches / c.fio.seconds, '1/s');
    add(`${n} consumer (take + parse) CPU per second`, c.consumerCpuS / c.fio.seconds, 's/s');
    add(`${n} drops (kernel + reader)`, c.drops + c.userDrops, 'count');
  });
  const medOff = median(off.map((o) => o.iops));
  const medOn = median(on.map((c) => c.fio.iops));
  add('median fio write IOPS, OFF', medOff, 'IOPS');
  add('median fio write IOPS, capture', medOn, 'IOPS');
  const capUs = (c: CapRun): number => (c.issueNs + c.endNs) / 1000 + ((c.readerCpuS + c.consumerCpuS) / c.fio.totalIos) * 1e6;
  add('capture CPU per request (BPF + reader + consumer), median', median(on.map(capUs)), 'µs');
  if (burst) {
    add('[64K 100 MiB/s] fio IOPS achieved', burst.fio.iops, 'IOPS');
    add('[64K 100 MiB/s] reader drops', burst.userDrops, 'count');
    add('[64K 100 MiB/s] kernel ring drops', burst.drops, 'count');
    add('[64K 100 MiB/s] reader thread CPU per second', burst.readerCpuS / burst.fio.seconds, 's/s');
  }
  for (const mode of ['single', 'agent'] as const) {
    bursts[mode].forEach((b, i) => add(`[64K 100 MiB/s, ${TAKE_LABEL[mode]} #${i + 1}] consumer CPU per MiB taken`, perMiB(b), 'ms/MiB'));
    if (bursts[mode].length > 0) add(`consumer CPU per MiB taken at 64K 100 MiB/s, ${TAKE_LABEL[mode]}, median`, median(bursts[mode].map(perMiB)), 'ms/MiB');
  }
  const ratios: Ratio[] = [{ name: 'IOPS capture / OFF', numerator: 'median fio write IOPS, capture', denominator: 'median fio write IOPS, OFF', value: medOn / medOff, target: 0.9 }];
  if (bursts.agent.length > 0 && bursts.single.length > 0) {
    ratios.push({ name: 'consumer CPU per MiB, 4 MiB takes / one 32 MiB take', numerator: `consumer CPU per MiB taken at 64K 100 MiB/s, ${TAKE_LABEL.agent}, median`, denominator: `consumer CPU per MiB taken at 64K 100 MiB/s, ${TAKE_LABEL.single}, median`, value: median(bursts.agent.map(perMiB)) / median(bursts.single.map(perMiB)) });
  }
  const table: string[][] = [['run', 'IOPS', 'p99 µs', 'BPF issue ns', 'BPF end ns', 'reader CPU s/s', 'reader switches/s', 'consumer CPU s/s', 'drops']];
  off.forEach((o, i) => table.push([`OFF #${i + 1}`, fmt(o.iops, 0), fmt(o.p99us, 0), '', '', '', '', '', '']));
  const row = (name: string, c: CapRun): string[] => [name, fmt(c.fio.iops, 0), fmt(c.fio.p99us, 0), fmt(c.issueNs, 0), fmt(c.endNs, 0), fmt(c.readerCpuS / c.fio.seconds, 3), fmt(c.readerSwitches / c.fio.seconds, 0), fmt(c.consumerCpuS / c.fio.seconds, 3), String(c.drops + c.userDrops)];
  on.forEach((c, i) => table.push(row(`CAP #${i + 1}`, c)));
  for (const mode of ['single', 'agent'] as const) bursts[mode].forEach((b, i) => table.push(row(`64K 100 MiB/s, ${TAKE_LABEL[mode]} #${i + 1}`, b)));
  table.push(['IOPS capture / OFF', fmt(medOn / medOff, 3), '', '', '', '', '', '', '']);
  return {
    params: { volumeBytes: sizeMiB * MiB, fio: { version: version('fio', '--version'), seconds: FIO_SECONDS, iodepth: 16, bs: 4096, direct: 1 }, ringMiB: RING_MIB, queueMiB: QUEUE_MIB, takeEveryMs: TAKE_EVERY_MS, order },
    figures,
    references: [],
    quoted: [],
    ratios,
    table,
    notes: [
      'CAP: the data-mode programs attached to the loop device (ring 256 MiB, reader SCHED_FIFO 1, queue 512 MiB) and a consumer on this process\'s main thread taking and parsing every 20 ms; no daemons. BPF figures are kernel run_time_ns / run_cnt with kernel.bpf_stats_enabled=1 (which adds its own clock reads to each run).',
      'Consumer CPU per MiB at 64K: the main thread\'s CPU (take, parse) over the record bytes it took, one collection of up to 32 MiB a second, taken as the agent does (takeRecords: native takes of 4 MiB) or in one native take; the two alternate.',
      'The machine is shared (2 cores): compare ratios within the run.',
    ],
  };
}
