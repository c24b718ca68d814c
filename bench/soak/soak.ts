// One soak run: disks, the three daemons on loopback behind chaos proxies, the writer, the seeded fault
// schedule for `minutes`, then healing, convergence and the checker's verdict.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Lab, type DaemonName } from '../../lab/lab.js';
import { unmountAndDetach } from '../system.js';
import { check, type Verdict } from './checker.js';
import { SourceClock } from './clock.js';
import { makeDisks } from './disks.js';
import { healAll, inject, type Fault, type FaultContext, type FaultKind } from './faults.js';
import { ChaosProxy } from './proxy.js';
import { Rng } from './rng.js';
import { BLOCK } from './stamp.js';
import { Writer } from './writer.js';

export interface SoakOptions {
  minutes: number;
  seed: number;
  kinds: readonly FaultKind[];
  /** Emptied first; holds the disks' images and mounts, and the lab. */
  workDir: string;
  volumeMiB?: number;
  convergeTimeoutMs?: number;
  /** The master target's retention; the default keeps every point 2 minutes, then one per 20 s. */
  retention?: Record<string, unknown>;
  log?(line: string): void;
}

export interface SoakRun {
  seed: number;
  minutes: number;
  kinds: readonly FaultKind[];
  faults: Fault[];
  writes: number;
  bytesWritten: number;
  converged: boolean;
  /** Daemons that exited without being killed, other than refusing to start (each restarted). */
  unexpectedExits: string[];
  /** Daemons that refused to start (exit 2, e.g. a full disk) and were started again, as a service manager does. */
  refusedStarts: string[];
  bytesResent: number;
  resyncs: number;
  verdict: Verdict;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Every point for 2 minutes, then thinned, within a space cap that purges the oldest (compaction and
 * purge run under the faults too; without a cap the log fills the master target's small disk in ~10 min).
 */
export const RETENTION = { window: '24h', tiers: [{ after: '2m', every: '20s' }], maintenanceIntervalMs: 3000, maxBytes: 128 << 20, onFull: 'purge' };

async function routeThroughProxies(lab: Lab, rng: Rng): Promise<{ 'agent-ps': ChaosProxy; 'ps-mt': ChaosProxy }> {
  const agent = JSON.parse(await fsp.readFile(lab.configs.agent, 'utf8')) as { processServer: { port: number } };
  const ps = JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as { masterTargets: Array<{ port: number }> };
  const proxies = { 'agent-ps': new ChaosProxy('agent-ps', agent.processServer.port, rng.fork()), 'ps-mt': new ChaosProxy('ps-mt', ps.masterTargets[0]!.port, rng.fork()) };
  agent.processServer.port = await proxies['agent-ps'].listen();
  ps.masterTargets[0]!.port = await proxies['ps-mt'].listen();
  await fsp.writeFile(lab.configs.agent, JSON.stringify(agent, null, 2));
  await fsp.writeFile(lab.configs.ps, JSON.stringify(ps, null, 2));
  return proxies;
}

/** Counts from the logs: differentials the master target received twice, resyncs the agent started. */
async function logFigures(lab: Lab): Promise<{ bytesResent: number; resyncs: number }> {
  let bytesResent = 0;
  for (const l of await lab.logLines('mt')) if (l.msg === 'retransmitted differential skipped') bytesResent += Number(l.rawBytes) || 0;
  const resyncs = (await lab.logLines('agent')).filter((l) => l.msg === 'resync started').length;
  return { bytesResent, resyncs };
}

/**
 * Stop thinning before the check (the master target restarted with a policy that thins nothing more),
 * so every point listed at its start is still there when its turn comes, as the retention test does.
 */
/** Wait for a background verify pass that began after `sinceMs` to complete. */
async function verifiedSince(lab: Lab, sinceMs: number, timeoutMs: number, onTick: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = ((await lab.status('agent'))?.volumes as Array<{ verify?: { lastPassEndedAt: number; lastPassMs: number } }> | undefined)?.[0]?.verify;
    if (v && v.lastPassEndedAt - v.lastPassMs > sinceMs) return;
    if (Date.now() > deadline) throw new Error(`no complete background verify pass after ${timeoutMs} ms`);
    await onTick();
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function holdRetention(lab: Lab): Promise<void> {
  await lab.stop('mt');
  const cfg = JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as { volumes: Array<{ retention: Record<string, unknown> }> };
  cfg.volumes[0]!.retention = { ...cfg.volumes[0]!.retention, tiers: [{ after: '7d', every: '1h' }] };
  await fsp.writeFile(lab.configs.mt, JSON.stringify(cfg, null, 2));
  lab.start('mt');
  await lab.waitConverged(Date.now(), 120_000);
}

export async function runSoak(o: SoakOptions): Promise<SoakRun> {
  const log = o.log ?? ((s: string) => console.log(s));
  const volumeBytes = (o.volumeMiB ?? 16) * 1048576;
  const blocks = volumeBytes / BLOCK;
  const rng = new Rng(o.seed);
  unmountAndDetach(o.workDir);
  await fsp.rm(o.workDir, { recursive: true, force: true });
  await fsp.mkdir(o.workDir, { recursive: true });
  const labDir = path.join(o.workDir, 'lab');
  const proxiesToClose: ChaosProxy[] = [];
  let lab: Lab | null = null;
  let writer: Writer | null = null;
  try {
    const disks = await makeDisks(o.workDir, labDir);
    const source = path.join(disks.xfs.mnt, 'source.img');
    const replica = path.join(disks.xfs.mnt, 'replica.img');
    await fsp.writeFile(source, '');
    await fsp.truncate(source, volumeBytes);
    await fsp.mkdir(path.join(disks.xfs.mnt, 'recovered'));
    const l = await Lab.create({
      dir: labDir,
      volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink', reflink: { dir: path.join(disks.xfs.mnt, 'clones') } }, mt: { retention: o.retention ?? RETENTION } }],
      // Background verify continuous rather than hourly, so the soak exercises it under the faults and a
      // flipped replica byte is found within the run.
      agent: { cycleIntervalMs: 700, maxDiffBytes: 4 << 20, window: 4, verify: { startDelayMs: 0, intervalMs: 5000, bytesPerSecond: 32 << 20 } },
      ps: { window: 4 },
      // Recovered points go to the XFS, the one place the master target may write them.
      mt: { recovery: { roots: [path.join(disks.xfs.mnt, 'recovered')] } },
    });
    lab = l;
    const proxies = await routeThroughProxies(l, rng);
    proxiesToClose.push(proxies['agent-ps'], proxies['ps-mt']);
    const clock = o.kinds.includes('clock-step') ? new SourceClock(path.join(o.workDir, 'agent-clock')) : null;
    const agentEnv = clock ? await clock.env() : {};
    const ctx: FaultContext = {
      lab: l, proxies, disks, clock, replica, volumeBytes, rng: rng.fork(),
      snapshot: { dir: path.join(o.workDir, 'agent-state-copy'), takenAt: null },
      startAgent: () => void l.start('agent', agentEnv),
    };
    const unexpectedExits: string[] = [];
    const refusedStarts: string[] = [];
    // The service manager's part (Restart=on-failure): a daemon that exits by itself is started again.
    const keepUp = (): void => {
      for (const d of ['mt', 'ps', 'agent'] as DaemonName[]) {
        const c = l.procs.get(d);
        if (c && (c.exitCode !== null || c.signalCode !== null)) {
          const what = `${d} exited by itself (code ${c.exitCode}, signal ${c.signalCode}) at ${new Date().toISOString()}`;
          (c.exitCode === 2 ? refusedStarts : unexpectedExits).push(what);
          if (d === 'agent') ctx.startAgent();
          else l.start(d);
        }
      }
    };
    l.start('mt');
    l.start('ps');
    ctx.startAgent();
    const w = new Writer(source, blocks, path.join(o.workDir, 'writer.log'), rng.fork());
    writer = w;
    w.start();

    const faults: Fault[] = [];
    const schedule = rng.fork();
    const until = Date.now() + o.minutes * 60_000;
    const started = Date.now();
    while (Date.now() < until) {
      await sleep(schedule.int(500, 4000));
      keepUp();
      if (Date.now() >= until) break;
      const f = await inject(schedule.pick(o.kinds), ctx);
      if (!f) continue;
      faults.push(f);
      log(`  ${((f.atMs - started) / 1000).toFixed(1).padStart(6)} s  ${f.kind.padEnd(13)} ${f.detail}`);
    }

    log('healing: network, disks and clock restored; writer stopped; waiting for convergence');
    await healAll(ctx);
    keepUp();
    await w.stop();
    const stoppedAt = Date.now();
    let converged = true;
    try {
      await l.waitConverged(stoppedAt, o.convergeTimeoutMs ?? 180_000, async () => keepUp());
    } catch (e) {
      converged = false;
      log(`NOT CONVERGED: ${(e as Error).message}`);
    }
    // A flipped replica byte no differential rewrote is only found by a verify: wait for a whole background
    // pass begun after the last fault (and its repair), as an operator would before trusting the replica.
    if (converged && faults.some((f) => f.kind === 'replica-flip')) {
      try {
        await verifiedSince(l, Date.now(), o.convergeTimeoutMs ?? 180_000, async () => keepUp());
        await l.waitConverged(Date.now(), o.convergeTimeoutMs ?? 180_000, async () => keepUp());
      } catch (e) {
        converged = false;
        log(`NOT VERIFIED: ${(e as Error).message}`);
      }
    }
    // Not converged again after the restart is reported by the check itself (the replica differs).
    await holdRetention(l).catch((e: Error) => log(`after holding retention: ${e.message}`));
    const verdict = await check({ lab: l, source, replica, outDir: path.join(disks.xfs.mnt, 'recovered'), history: w.history, blocks, faults, log });
    return { seed: o.seed, minutes: o.minutes, kinds: o.kinds, faults, writes: w.history.length, bytesWritten: w.bytesWritten, converged, unexpectedExits, refusedStarts, ...(await logFigures(l)), verdict };
  } finally {
    // Also when the run failed: a writer left running keeps the process alive and its disk busy.
    await writer?.stop().catch(() => {});
    await lab?.stopAll();
    for (const p of proxiesToClose) await p.close();
    unmountAndDetach(o.workDir);
  }
}
