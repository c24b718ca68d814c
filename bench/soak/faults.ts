// The fault kinds the soak injects, each switchable, and how each is injected. A fault that must be
// noticed (a resync, an alert) says so in `expect`; the checker looks for it in the logs written after
// the fault.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import type { DaemonName, Lab } from '../../lab/lab.js';
import { bin } from '../system.js';
import type { SourceClock } from './clock.js';
import { fill, free, type SoakDisks } from './disks.js';
import { logged, logSize } from './evidence.js';
import type { ChaosProxy } from './proxy.js';
import type { Rng } from './rng.js';

export const FAULT_KINDS = ['kill', 'net-delay', 'net-drop', 'net-partition', 'disk-full', 'clock-step', 'state-restore', 'replica-flip'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/**
 * What `npm test` injects: the kinds current main survives, clock-step (issue 11.3) and state-restore (11.1)
 * included. replica-flip (11.8) is switched on with --faults until more long runs have passed with it.
 */
export const DEFAULT_KINDS: readonly FaultKind[] = ['kill', 'net-delay', 'net-drop', 'net-partition', 'disk-full', 'clock-step', 'state-restore'];

/**
 * Evidence the pipeline must leave after a fault: a warning or error from one of `daemons` whose message
 * or code matches `match` (a resync started matches "resync started").
 */
export interface Expectation {
  daemons: DaemonName[];
  what: string;
  match: string;
}

export interface Fault {
  kind: FaultKind;
  atMs: number;
  detail: string;
  /** Size of each daemon's log when the fault began: only what is logged after it counts as evidence. */
  logOffsets: Record<DaemonName, number>;
  expect?: Expectation;
}

type Injected = Omit<Fault, 'atMs' | 'logOffsets'>;

export interface FaultContext {
  lab: Lab;
  proxies: { 'agent-ps': ChaosProxy; 'ps-mt': ChaosProxy };
  disks: SoakDisks;
  clock: SourceClock | null;
  replica: string;
  volumeBytes: number;
  /** Where the agent's state is copied for state-restore. */
  snapshot: { dir: string; takenAt: number | null };
  startAgent(): void;
  rng: Rng;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function restart(ctx: FaultContext, d: DaemonName): void {
  if (d === 'agent') ctx.startAgent();
  else ctx.lab.start(d);
}

/** Inject one fault of `kind`; returns once the fault is over (a clock step stays in place). */
export async function inject(kind: FaultKind, ctx: FaultContext): Promise<Fault | null> {
  const atMs = Date.now();
  const logOffsets = { agent: await logSize(ctx.lab, 'agent'), ps: await logSize(ctx.lab, 'ps'), mt: await logSize(ctx.lab, 'mt') };
  const f = await injectKind(kind, ctx, logOffsets);
  return f && { ...f, atMs, logOffsets };
}

async function injectKind(kind: FaultKind, ctx: FaultContext, logOffsets: Record<DaemonName, number>): Promise<Injected | null> {
  const { lab, rng } = ctx;
  switch (kind) {
    case 'kill': {
      const d = rng.pick(['agent', 'ps', 'mt'] as const);
      const down = rng.int(0, 1500);
      await lab.kill(d);
      await sleep(down);
      restart(ctx, d);
      return { kind, detail: `SIGKILL ${d}, restarted after ${down} ms` };
    }
    case 'net-delay': {
      const hop = rng.pick(['agent-ps', 'ps-mt'] as const);
      const ms = rng.int(20, 400);
      const hold = rng.int(1000, 6000);
      ctx.proxies[hop].delay(ms);
      await sleep(hold);
      ctx.proxies[hop].delay(0);
      return { kind, detail: `${hop} +${ms} ms per chunk for ${hold} ms` };
    }
    case 'net-drop': {
      const hop = rng.pick(['agent-ps', 'ps-mt'] as const);
      const n = ctx.proxies[hop].drop();
      return { kind, detail: `${hop}: ${n} connection(s) cut` };
    }
    case 'net-partition': {
      const hop = rng.pick(['agent-ps', 'ps-mt'] as const);
      const hold = rng.int(1000, 8000);
      ctx.proxies[hop].partition(true);
      await sleep(hold);
      ctx.proxies[hop].partition(false);
      return { kind, detail: `${hop} partitioned for ${hold} ms` };
    }
    case 'disk-full': {
      const d = rng.pick(['ps', 'mt'] as const);
      const mnt = d === 'ps' ? ctx.disks.psCache.mnt : ctx.disks.mtState.mnt;
      const match = 'TM_ERR_DISK_FULL|space';
      const taken = await fill(mnt, 'soak-filler');
      const t0 = Date.now();
      await sleep(rng.int(1500, 6000));
      // Kept full until the daemon says so (its check runs every second, later on a busy machine), at most 20 s.
      while (Date.now() - t0 < 20_000 && !(await logged(lab, d, logOffsets[d], match))) await sleep(250);
      await free(mnt, 'soak-filler');
      return { kind, detail: `${d} filesystem filled (${(taken / 1048576).toFixed(0)} MiB) for ${Date.now() - t0} ms`, expect: { daemons: [d], what: 'a full-disk warning', match } };
    }
    case 'clock-step': {
      if (!ctx.clock) return null;
      const from = ctx.clock.offsetS;
      // Within the certificates' 5-minute backdating, so TLS still accepts the stepped side.
      const to = rng.int(-240, 241);
      await ctx.clock.step(to);
      // A step back makes capture times go backwards: the master target must notice (issue 11.3).
      return { kind, detail: `source clock ${from >= 0 ? '+' : ''}${from} s -> ${to >= 0 ? '+' : ''}${to} s`, ...(to < from ? { expect: { daemons: ['mt'], what: 'a warning that capture time went back', match: 'clock|capture time|backward' } } : {}) };
    }
    case 'state-restore': {
      // One draw copies the agent's state (agent stopped, as a VM snapshot would catch it); a draw at
      // least 8 s later puts that copy back, as a snapshot revert or a backup restore does.
      const stateDir = lab.stateDirs.agent;
      const takenAt = ctx.snapshot.takenAt;
      if (takenAt !== null && Date.now() - takenAt < 8000) return null;
      // The agent makes its state folder when it first starts: before that there is nothing to copy.
      if (takenAt === null && !(await fsp.stat(stateDir).then(() => true, () => false))) return null;
      await lab.kill('agent');
      if (takenAt === null) {
        await fsp.rm(ctx.snapshot.dir, { recursive: true, force: true });
        execFileSync(bin('cp') ?? 'cp', ['-a', stateDir, ctx.snapshot.dir]);
        ctx.snapshot.takenAt = Date.now();
        ctx.startAgent();
        return { kind, detail: 'agent state copied (restored on a later draw)' };
      }
      ctx.snapshot.takenAt = null;
      await fsp.rm(stateDir, { recursive: true, force: true });
      execFileSync(bin('cp') ?? 'cp', ['-a', ctx.snapshot.dir, stateDir]);
      ctx.startAgent();
      return { kind, detail: `agent state restored from the copy of ${((Date.now() - takenAt) / 1000).toFixed(0)} s ago`, expect: { daemons: ['agent'], what: 'a resync', match: 'resync started' } };
    }
    case 'replica-flip': {
      const off = rng.int(0, ctx.volumeBytes);
      const bit = 1 << rng.int(0, 8);
      // Not created yet (the master target makes it at the volume's first connection): nothing to flip.
      const fh = await fsp.open(ctx.replica, 'r+').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return null;
        throw e;
      });
      if (!fh) return null;
      try {
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, off);
        b[0]! ^= bit;
        await fh.write(b, 0, 1, off);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return { kind, detail: `replica byte ${off} xor ${bit}`, expect: { daemons: ['agent', 'mt'], what: 'a verify alert', match: 'verify|differ|damage|mismatch' } };
    }
  }
}

/** Undo whatever is still in force: network healed, disks freed, clock back to real time. */
export async function healAll(ctx: FaultContext): Promise<void> {
  ctx.proxies['agent-ps'].heal();
  ctx.proxies['ps-mt'].heal();
  await free(ctx.disks.psCache.mnt, 'soak-filler');
  await free(ctx.disks.mtState.mnt, 'soak-filler');
  if (ctx.clock && ctx.clock.offsetS !== 0) await ctx.clock.step(0);
}

export function parseKinds(text: string): FaultKind[] {
  if (text === 'all') return [...FAULT_KINDS];
  const out: FaultKind[] = [];
  for (const k of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new Error(`unknown fault kind "${k}"; kinds: ${FAULT_KINDS.join(', ')}, or "all"`);
    out.push(k as FaultKind);
  }
  if (out.length === 0) throw new Error('--faults needs at least one kind');
  return out;
}
