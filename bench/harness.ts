// Shared pieces of the benchmarks: the machine they ran on, CPU seconds of a child process from /proc,
// a table printer and the JSON results file. Benchmarks measure and report; they assert nothing.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: this file runs as dist/bench/harness.js. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RESULTS_DIR = path.join(REPO_ROOT, 'bench', 'results');
/** Scratch space for volumes and daemon state; gitignored. */
export const WORK_DIR = path.join(REPO_ROOT, 'bench', 'work');

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/**
 * One measured number. `value` is what the unit says; booleans record checks such as "replica equals
 * source". A figure the run never observed is `null` with a `note` saying why, never another figure put in
 * its place (results files: a non-finite number is written as null with a note).
 */
export interface Figure {
  name: string;
  value: number | boolean | string | null;
  unit: string;
  note?: string;
}

/** Something measured in the same run to compare against: a raw read, a pipeline of standard tools. */
export interface Reference {
  name: string;
  description: string;
  figures: Figure[];
}

/**
 * A figure quoted from outside (a vendor's published overhead), not measured here: kept apart from the
 * same-run references and marked as quoted wherever it is printed or written.
 */
export interface Quoted {
  name: string;
  /** Where the figure comes from. */
  source: string;
  description: string;
  figures: Figure[];
}

export interface Ratio {
  name: string;
  numerator: string;
  denominator: string;
  value: number;
  /** The value the issue aims for, when there is one. Informative only: nothing fails below it. */
  target?: number;
}

export interface BenchResult {
  /** Inputs that shaped the run: sizes, settings, tool versions. */
  params: Record<string, unknown>;
  figures: Figure[];
  references: Reference[];
  /** Outside figures, not measured in this run (may be empty). */
  quoted: Quoted[];
  ratios: Ratio[];
  /** What is printed: first row is the header. */
  table: string[][];
  notes: string[];
  /** Results file name when a partial run must not replace the benchmark's own (default: its name). */
  resultsName?: string;
}

export interface Benchmark {
  description: string;
  run(): Promise<BenchResult>;
}

export interface Machine {
  cores: number;
  cpuModel: string;
  kernel: string;
  platform: string;
  arch: string;
  node: string;
  totalMemMiB: number;
  /** 1, 5 and 15 minute load averages when the run started: other work on the machine skews figures. */
  loadAvgAtStart: number[];
}

export function machine(): Machine {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    kernel: os.release(),
    platform: os.platform(),
    arch: os.arch(),
    node: process.version,
    totalMemMiB: Math.round(os.totalmem() / MiB),
    loadAvgAtStart: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

let clockTicks: number | null = null;
function ticksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

interface ProcStat {
  /** Minor page faults (field 10) and those of reaped children (field 11). */
  minflt: number;
  cminflt: number;
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
}

function readStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null; // exited
  }
  // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); minflt, cminflt are fields 10 and 11; utime, stime, cutime, cstime 14..17.
  return { minflt: Number(f[7]), cminflt: Number(f[8]), utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14]) };
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ')) if (c.trim()) out.push(Number(c));
    } catch {
      // thread gone
    }
  }
  return out;
}

/**
 * CPU seconds (user + system, every thread) of a process and its live descendants, plus the children it
 * has already reaped. Read it while the process runs: once it has exited /proc no longer has it, so
 * callers read it right before sending SIGTERM (see CpuMeter).
 */
export function cpuSecondsTree(pid: number): number | null {
  return usageTree(pid)?.cpuSeconds ?? null;
}

/** A process's peak resident set (VmHWM), MiB; null once it is gone. */
function peakRssMiB(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

interface Usage {
  cpuSeconds: number;
  minorFaults: number;
  /** The largest peak resident set of the processes (not their sum). */
  peakRssMiB: number;
}

/** cpuSecondsTree, with the minor page faults of the same processes (on this VM each costs ~15 µs). */
function usageTree(pid: number): Usage | null {
  const root = readStat(pid);
  if (root === null) return null;
  let ticks = root.utime + root.stime + root.cutime + root.cstime;
  let faults = root.minflt + root.cminflt;
  let peak = peakRssMiB(pid) ?? 0;
  const stack = childrenOf(pid);
  const seen = new Set<number>([pid]);
  while (stack.length > 0) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const s = readStat(p);
    if (s === null) continue;
    ticks += s.utime + s.stime + s.cutime + s.cstime;
    faults += s.minflt + s.cminflt;
    peak = Math.max(peak, peakRssMiB(p) ?? 0);
    stack.push(...childrenOf(p));
  }
  return { cpuSeconds: ticks / ticksPerSecond(), minorFaults: faults, peakRssMiB: peak };
}

/** Keeps the last CPU reading of each named process, so a reading survives the process exiting. */
export class CpuMeter {
  private readonly last = new Map<string, Usage>();
  private readonly pids = new Map<string, number>();

  watch(name: string, pid: number | undefined): void {
    if (pid !== undefined) this.pids.set(name, pid);
  }

  /** Call periodically and right before stopping the processes. */
  sample(): void {
    for (const [name, pid] of this.pids) {
      const s = usageTree(pid);
      if (s !== null) this.last.set(name, s);
    }
  }

  seconds(name: string): number {
    return this.last.get(name)?.cpuSeconds ?? NaN;
  }

  /** Minor page faults: a count that load on the machine does not skew, unlike CPU seconds. */
  faults(name: string): number {
    return this.last.get(name)?.minorFaults ?? NaN;
  }

  /** Peak resident set, MiB: memory first touched is faulted in, so it bounds the faults a run must take. */
  peakRssMiB(name: string): number {
    return this.last.get(name)?.peakRssMiB ?? NaN;
  }
}

/** Aligned columns; numbers right-aligned. */
export function formatTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const numeric = (s: string): boolean => s === '-' || /^[-+]?[\d.,]+(e[-+]?\d+)?[x%]?$/.test(s);
  const line = (r: string[]): string => r.map((c, i) => (numeric(c) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const [head, ...body] = rows;
  if (!head) return '';
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** A number for the table: fixed decimals, '-' when not measured. */
export function fmt(n: number | undefined | null, digits = 1): string {
  return n === undefined || n === null || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

export interface ResultsFile {
  name: string;
  description: string;
  date: string;
  machine: Machine;
  params: Record<string, unknown>;
  figures: Figure[];
  references: Reference[];
  quoted: Quoted[];
  ratios: Ratio[];
  notes: string[];
}

/** Value as written: rounded, and a number never observed (NaN, ±Infinity) as null with a note. */
export function resultFigure(f: Figure): Figure {
  if (typeof f.value === 'number' && !Number.isFinite(f.value)) return { ...f, value: null, note: f.note ?? 'not observed in this run' };
  if (f.value === null) return { ...f, note: f.note ?? 'not observed in this run' };
  return { ...f, value: typeof f.value === 'number' ? Number(f.value.toPrecision(6)) : f.value };
}

/** Figures the run did not observe, as printed under the table: "name: why". */
export function missingFigures(r: Pick<BenchResult, 'figures' | 'references'>): string[] {
  const all = [...r.figures, ...r.references.flatMap((x) => x.figures.map((f) => ({ ...f, name: `${x.name}: ${f.name}` })))];
  return all.map(resultFigure).filter((f) => f.value === null).map((f) => `${f.name}: ${f.note!}`);
}

/** bench/results/<name>.json: every figure with its unit, the references, the ratios and the machine. */
export async function writeResults(name: string, description: string, m: Machine, r: BenchResult): Promise<string> {
  await fsp.mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.json`);
  const out: ResultsFile = {
    name,
    description,
    date: new Date().toISOString(),
    machine: m,
    params: r.params,
    figures: r.figures.map(resultFigure),
    references: r.references.map((x) => ({ ...x, figures: x.figures.map(resultFigure) })),
    quoted: r.quoted.map((x) => ({ ...x, figures: x.figures.map((f) => ({ ...resultFigure(f), quoted: x.source })) })),
    ratios: r.ratios.map((x) => ({ ...x, value: Number.isFinite(x.value) ? Number(x.value.toPrecision(4)) : null as unknown as number })),
    notes: r.notes,
  };
  await fsp.writeFile(file, JSON.stringify(out, null, 2) + '\n');
  return file;
}

/** Wall seconds of an async step. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { value, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** Where a required command-line tool is, or null. */
export function which(cmd: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

/** The volume size a benchmark runs at: 1 GiB, or TIDEMARK_BENCH_SIZE_MIB for a quicker trial. */
export function benchSizeMiB(minimum: number, why: string): number {
  const env = process.env.TIDEMARK_BENCH_SIZE_MIB;
  if (env === undefined || env === '') return 1024;
  const n = Number(env);
  if (!Number.isInteger(n) || n < minimum) throw new Error(`TIDEMARK_BENCH_SIZE_MIB must be an integer of at least ${minimum} (${why}), not "${env}"`);
  return n;
}

/**
 * The CPU-profile preload (cpu-prof-preload.ts) writes <pid>.cpuprofile and <pid>.gc.json at exit: name
 * each after its daemon, keeping what follows the pid (`agent.cpuprofile`, `agent.gc.json`).
 */
export async function nameProfiles(dir: string, daemonOfPid: (pid: number) => string | undefined): Promise<void> {
  for (const f of await fsp.readdir(dir)) {
    const dot = f.indexOf('.');
    const name = dot > 0 && /^\d+$/.test(f.slice(0, dot)) ? daemonOfPid(Number(f.slice(0, dot))) : undefined;
    if (name) await fsp.rename(path.join(dir, f), path.join(dir, `${name}${f.slice(dot)}`));
  }
}
