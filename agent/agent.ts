// The agent daemon: protects the volumes its config names and streams their differentials to the
// process server. build() makes it; open() starts it; close() stops it gracefully (idempotent).
import path from 'node:path';
import { ensureDir } from '../common/durable.js';
import { tmError, wrap } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { trustPaths } from '../common/peer-trust.js';
import { didYouMean, resolveFrom } from '../common/config.js';
import { DaemonShell } from '../common/daemon-shell.js';
import { fileAgeMs } from '../common/metrics.js';
import { agentMetrics } from './metrics.js';
import { connectTls } from '../common/tls.js';
import { DiffSender } from '../proto/sender.js';
import { KEEP_BYTES } from '../proto/hrl.js';
import { DEFAULTS } from '../common/defaults.js';
import type { AgentConfig, AgentVolumeConfig } from './config.js';
import type { Capture } from './capture/capture.js';
import { DataFreezeCapture } from './capture/data-freeze.js';
import { DataScriptCapture } from './capture/data-script.js';
import { FreezeCapture } from './capture/freeze.js';
import { ReflinkCapture } from './capture/reflink.js';
import { ScriptCapture } from './capture/script.js';
import { BlockTraceTracker } from './trackers/blocktrace.js';
import { DataTracker } from './trackers/data.js';
import type { Tracker } from './trackers/tracker.js';
import { NoCapture } from './capture/none.js';
import { Journal } from './journal.js';
import { Resync, type ResyncMode } from './resync.js';
import { BackgroundVerify } from './background-verify.js';
import { VolumeReplicator, type CycleResult } from './replicator.js';
import { ConsistencyGroup } from './group.js';
import { ScanTracker } from './trackers/scan.js';
import { Volume } from './volume.js';
import { Drains } from './drain.js';
import { isDue, monotonicMs, nextDue, type Cadenced } from './cadence.js';

/** A volume or group as the cycle runs it: when it is due next, and whether it had more than one differential. */
interface Unit extends Cadenced {
  run: () => Promise<CycleResult[]>;
  everyMs: number;
}

function unit(everyMs: number, run: () => Promise<CycleResult[]>): Unit {
  return { run, everyMs, nextAt: 0, more: false };
}

/** How long a cycle waits for one volume (or group) before going on to the next; see runCycle. */
const UNIT_WAIT_MS = 5000;

export class Agent {
  readonly replicators: VolumeReplicator[] = [];
  readonly groups: ConsistencyGroup[] = [];
  /** What a cycle runs, in config order: a volume on its own, or a consistency group with all its members, each at its own cadence. */
  private units: Unit[] = [];
  private sender: DiffSender | null = null;
  /** Identity, state lock, status and operator endpoints, and their closing (common/daemon-shell.ts). */
  private readonly shell: DaemonShell;
  private timer: NodeJS.Timeout | null = null;
  private cycling: Promise<void> | null = null;
  /** Units still running after UNIT_WAIT_MS of an earlier cycle; skipped until they finish. */
  private readonly lingering = new Map<number, Promise<void>>();
  private wakeRequested = false;
  /** Volumes drained for a planned failover (agent/drain.ts). */
  private drains!: Drains;

  constructor(readonly config: AgentConfig & { configDir: string }, private readonly log: Logger) {
    this.shell = new DaemonShell('agent', log);
  }

  private path(p: string): string {
    return resolveFrom(this.config.configDir, p);
  }

  async open(): Promise<void> {
    const cfg = this.config;
    const metrics = agentMetrics(this.log, () => this.snapshot());
    // Two agents on one state folder would number, send and delete each other's differentials.
    const trust = await this.shell.start({ trust: trustPaths(cfg.tls, (x) => this.path(x)), certPath: cfg.tls.cert, stateDir: this.path(cfg.stateDir) });
    const { host, port, name } = cfg.processServer;
    this.sender = new DiffSender({
      nodeName: cfg.name,
      role: 'agent',
      log: this.log.child({ component: 'uploader' }),
      window: cfg.window,
      volumes: () => this.replicators,
      connect: () => connectTls(host, port, trust, { role: 'process-server', name }),
    });
    for (const vc of cfg.volumes) this.replicators.push(await this.openVolume(vc));
    this.drains = new Drains(path.join(this.path(cfg.stateDir), 'volumes'), this.log);
    await this.drains.open(cfg.volumes.map((v) => v.id));
    await this.openGroups();
    this.sender.start();
    const statusPort = await this.shell.serveStatus(cfg.statusPort, () => this.snapshot(), metrics);
    await this.shell.serveOperators((action, params) => this.act(action, params), cfg.operatorListen, { status: () => this.snapshot(), metrics });
    this.log.info({ volumes: cfg.volumes.length, statusPort }, 'agent started');
    this.schedule(0);
  }

  private async openVolume(vc: AgentVolumeConfig): Promise<VolumeReplicator> {
    const id = vc.id;
    const log = this.log.child({ volume: id });
    const dir = path.join(this.path(this.config.stateDir), 'volumes', id);
    await ensureDir(dir);
    const volume = await Volume.open(this.path(vc.path));
    // Two of the largest differentials it writes (none over KEEP_BYTES is kept in memory anyway).
    const journal = new Journal(dir, id, log, 2 * Math.min(KEEP_BYTES, Math.max(this.config.maxDiffBytes, this.config.resyncWindowBytes)));
    await journal.open({ sizeBytes: volume.sizeBytes, blockSize: this.config.blockSize }).catch((e) => { throw wrap(e, `open journal of ${id}`, { volume: id }); });
    let resync: Resync | null = null;
    const tracker = this.makeTracker(vc, dir, volume, log, (reason) => resync!.start('resync', reason).then(() => this.wake()));
    const capture = this.makeCapture(vc, volume, log, tracker);
    await capture.open?.().catch((e) => { throw wrap(e, `capture "${vc.capture}" of ${id}`, { volume: id }); });
    const live = new NoCapture(volume);
    resync = new Resync(dir, id, volume.sizeBytes, this.config.blockSize, {
      // Data mode: writes made while a window is read are in the stream; a freeze per window would only hold the application.
      capture: vc.tracker === 'data' ? live : capture, tracker, journal, log, windowBytes: this.config.resyncWindowBytes, live,
      ask: (q, hashes) => this.sender!.query(q, hashes),
    });
    await resync.open();
    if (journal.lost) {
      log.error({ volume: id, code: 'TM_ERR_SOURCE_REGRESSED', err: journal.lost }, 'journal lost: what it held never reached the process server; resyncing');
      await resync.start('resync', `TM_ERR_SOURCE_REGRESSED: ${journal.lost}`);
      await journal.markIntact();
    }
    // No baseline to trust (a new volume, or one lost or damaged): compare with the replica first.
    const why = await tracker.open().catch((e) => { throw wrap(e, `tracker "${vc.tracker}" of ${id}`, { volume: id }); });
    if (why !== null) await resync.start('resync', why, { resume: true });
    const verifier = new BackgroundVerify(dir, id, resync, this.config.verify, log);
    await verifier.open();
    return new VolumeReplicator(id, volume, tracker, capture, journal, resync, {
      maxDiffBytes: this.config.maxDiffBytes,
      journalQuotaBytes: this.config.journalQuotaBytes,
      cycleIntervalMs: this.intervalOf(vc),
      bitmapAfterMs: this.config.bitmapAfterMs,
      unreachableMs: () => (this.sender && this.sender.stats.downSince > 0 ? Date.now() - this.sender.stats.downSince : 0),
      log,
    }, verifier);
  }

  private async openGroups(): Promise<void> {
    const byId = (id: string): VolumeReplicator => this.replicators.find((r) => r.volumeId === id)!;
    for (const gc of this.config.groups) {
      const members = gc.volumes.map((id) => ({ replicator: byId(id), config: this.config.volumes.find((v) => v.id === id)! }));
      const g = new ConsistencyGroup(gc, members, { stateDir: this.path(this.config.stateDir), log: this.log, onError: (id, e) => this.cycleFailed(id, e) });
      await g.open();
      this.groups.push(g);
    }
    for (const r of this.replicators) {
      const g = this.groups.find((x) => x.members.some((m) => m.replicator === r));
      const everyMs = this.intervalOf(this.config.volumes.find((v) => v.id === r.volumeId)!);
      if (!g) this.units.push(unit(everyMs, async () => { try { return await this.drains.cycle(r, () => this.sender?.notify()); } catch (e) { this.cycleFailed(r.volumeId, e); return []; } }));
      else if (g.members[0]!.replicator === r) this.units.push(unit(this.config.cycleIntervalMs, () => g.cycle()));
    }
  }

  /**
   * How often a volume on its own is collected: a data-mode stream every `data.collectIntervalMs` (each
   * slice a point, and a small differential that the process server and master target pass on while the
   * next is collected), anything else every `cycleIntervalMs`.
   */
  private intervalOf(vc: AgentVolumeConfig): number {
    return vc.tracker === 'data' ? this.config.data.collectIntervalMs : this.config.cycleIntervalMs;
  }

  /** A data-mode tag (freeze or script) at most once a second, and not more often than cycles once came: collecting faster does not freeze faster. */
  private tagGapMs(): number {
    return Math.max(1000, this.config.cycleIntervalMs);
  }

  private makeTracker(vc: AgentVolumeConfig, dir: string, volume: Volume, log: Logger, onLost: (reason: string) => Promise<void>): Tracker {
    if (vc.tracker === 'data') return new DataTracker(dir, volume.path, volume.sizeBytes, this.config.blockSize, log, { ...this.config.data, pinKey: dir, onLost });
    if (vc.tracker === 'blocktrace') return new BlockTraceTracker(dir, volume.path, volume.sizeBytes, this.config.blockSize, log, { ...this.config.blocktrace, onLost });
    return new ScanTracker(dir, volume.sizeBytes, this.config.blockSize, log);
  }

  private makeCapture(vc: AgentVolumeConfig, volume: Volume, log: Logger, tracker: Tracker): Capture {
    if (vc.capture === 'freeze' && tracker instanceof DataTracker) return new DataFreezeCapture(vc.id, volume, vc.freeze!, this.path(this.config.stateDir), log, tracker, this.tagGapMs());
    if (vc.capture === 'reflink') return new ReflinkCapture(vc.id, volume, { keep: vc.reflink?.keep ?? DEFAULTS.agent.reflinkKeep, dir: vc.reflink?.dir && this.path(vc.reflink.dir) }, log);
    if (vc.capture === 'freeze') return new FreezeCapture(vc.id, volume, vc.freeze!, this.path(this.config.stateDir), log);
    if (vc.capture === 'script' && tracker instanceof DataTracker) return new DataScriptCapture(vc.id, volume, vc.script!, log, tracker, this.tagGapMs());
    if (vc.capture === 'script') return new ScriptCapture(vc.id, volume, vc.script!, log);
    return new NoCapture(volume);
  }

  /** Run every unit now (an operator request): at once if idle, else right after the running cycle. */
  private wake(): void {
    if (!this.timer && !this.cycling) return; // still opening: the first cycle comes at once anyway
    this.wakeRequested = true;
    if (this.cycling) return;
    if (this.timer) clearTimeout(this.timer);
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.shell.stopping) return;
    this.timer = setTimeout(() => {
      this.cycling = this.runCycle().finally(() => { this.cycling = null; });
    }, ms);
  }

  /**
   * One cycle over the units that are due (their interval passed, more dirty data than one differential
   * last time, or a wake); then sleep until the next one is due.
   */
  private async runCycle(): Promise<void> {
    const woken = this.wakeRequested;
    this.wakeRequested = false;
    for (const [i, u] of this.units.entries()) {
      if (this.lingering.has(i) || !isDue(u, monotonicMs(), woken)) continue;
      u.nextAt = monotonicMs() + u.everyMs;
      u.more = false;
      let late = false;
      const done = u.run().then((results) => {
        for (const res of results) {
          if (res.seq !== null) this.sender?.notify();
          u.more ||= res.more;
        }
      }, (e: unknown) => this.log.error({ err: (e as Error)?.message ?? String(e) }, 'cycle failed; will retry')).finally(() => {
        if (!late) return;
        this.lingering.delete(i);
        this.wake();
      });
      // A unit can wait long on the replica side (a resync question to a master target that hangs): let
      // it finish in the background rather than hold up this agent's volumes on other master targets.
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([done.then(() => true), new Promise<boolean>((r) => { timer = setTimeout(() => r(false), UNIT_WAIT_MS); })]);
      clearTimeout(timer);
      if (!finished) {
        late = true;
        this.lingering.set(i, done);
      }
    }
    this.schedule(this.wakeRequested ? 0 : nextDue(this.units.filter((_, i) => !this.lingering.has(i)), monotonicMs(), this.config.cycleIntervalMs));
  }

  private cycleFailed(volumeId: string, e: unknown): void {
    const err = wrap(e, `cycle of ${volumeId}`, { volume: volumeId });
    // A resync needs the replica side; while it is unreachable that is expected, not a failure.
    if (err.code === 'TM_ERR_CONNECTION') this.log.warn({ volume: volumeId, code: err.code, err: err.message }, 'resync waiting for the replica side');
    else this.log.error({ volume: volumeId, code: err.code, err: err.message }, 'cycle failed; will retry');
  }

  /** Operator requests on the operator socket (common/operator-socket.ts): POST /resync?volume=V&mode=resync|verify|repair, /drain?volume=V, /resume?volume=V. */
  private async act(action: string, params: URLSearchParams): Promise<unknown> {
    if (!['resync', 'drain', 'resume'].includes(action)) throw tmError('TM_ERR_USAGE', `unknown action "${action}"`);
    const id = params.get('volume') ?? '';
    const r = this.replicators.find((x) => x.volumeId === id);
    if (!r) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${id}" is not protected by this agent; ${didYouMean(id, this.replicators.map((x) => x.volumeId))}`, { volume: id });
    if (action !== 'resync') return this.drainAction(action, r);
    if (this.drains.get(id)) throw tmError('TM_ERR_USAGE', `${id} is drained for a failover; \`tidemark resume ${id}\` protects it again, starting with a resync`, { volume: id });
    const mode = (params.get('mode') ?? 'resync') as ResyncMode;
    if (!['resync', 'verify', 'repair'].includes(mode)) throw tmError('TM_ERR_USAGE', `unknown mode "${mode}"; ${didYouMean(mode, ['resync', 'verify', 'repair'])}`);
    if (!(await r.resync.start(mode, 'requested by operator'))) {
      throw tmError('TM_ERR_USAGE', `a ${r.resync.state.mode} of ${id} is under way (${r.resync.progress().percent}%); verify once it is done`, { volume: id });
    }
    this.wake();
    return { volume: id, mode, started: true };
  }

  /** Planned failover (agent/drain.ts): the final point, taken by the next cycle; or protect again after failback. */
  private async drainAction(action: string, r: VolumeReplicator): Promise<unknown> {
    if (action === 'resume') {
      const resumed = await this.drains.resume(r);
      this.wake();
      return { volume: r.volumeId, resumed };
    }
    const g = this.groups.find((x) => x.members.some((m) => m.replicator === r));
    if (g) throw tmError('TM_ERR_USAGE', `${r.volumeId} is in consistency group "${g.name}": draining one member alone is not supported yet`, { volume: r.volumeId });
    const point = this.drains.request(r);
    this.wake();
    return point;
  }

  snapshot(): Record<string, unknown> {
    return { role: 'agent', name: this.config.name, pid: process.pid, uploader: this.sender?.stats, volumes: this.replicators.map((r) => ({ ...r.status(), drained: this.drains?.get(r.volumeId) ?? null, backlogAgeMs: fileAgeMs(r.journal.pending().length > 0 ? r.journal.file(r.journal.pending()[0]!) : null) })), groups: this.groups.map((g) => g.status()) };
  }

  /** Stop (idempotent): the shell first takes no new operator action, then this, then its own parts. */
  close(): Promise<void> {
    return this.shell.close(async () => {
      if (this.timer) clearTimeout(this.timer);
      await this.cycling;
      await this.sender?.close(); // fails questions still waiting for an answer
      await Promise.all(this.lingering.values());
      for (const r of this.replicators) {
        await r.close();
        await r.resync.close(); // windows compared ahead: their questions failed with the sender
        await r.tracker.close();
        await r.volume.close();
      }
    });
  }
}

