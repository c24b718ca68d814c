// The guided failover, reverse replication and failback of one volume, as the website runs it (Zerto's and
// ASR's "failover / commit / reverse protect / failback" wizards): each step is confirmed by an operator and
// audited. What the daemons can do is asked of them through their authenticated operator channel (the
// relay, actions.ts): the drain of the source, the recovery of the final point, the drain of the reverse
// source, the resume of the forward agent. What needs a person on a host (write the reverse configs and
// start the reverse daemons; stop them after the failback) is shown as the exact commands to run, and the
// sequence waits until the collected status shows it done: the reverse agent, process server and master
// target answering and converged before the failback is offered, and all three stopped before the sequence
// is complete. The sequence is kept in the store after every change, so it survives a restart of the
// configuration server; a step that was running then is marked failed and can be retried (every step is
// safe to repeat: a drain answers with the same final point, the recovery rewrites its own output).
// docs/OPERATIONS.md, "Guided failover and failback".
import path from 'node:path';
import { codeOf, tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { reverseNames, type ReverseNames } from '../master-target/failover/reverse-plan.js';
import type { ActionRelay } from './actions.js';
import type { Collector } from './collector.js';
import { csPath, type ConfigServerConfig, type DaemonEntry } from './config.js';
import type { GuidedRecord, Store } from './store.js';

export type GuidedKind = 'planned' | 'unplanned';
export type StepId = 'drain' | 'failover' | 'reverse' | 'failback' | 'resume' | 'stop-reverse';
export type StepState = 'pending' | 'running' | 'waiting' | 'done' | 'failed' | 'skipped';

export interface GuidedStep {
  id: StepId;
  state: StepState;
  detail: string;
  /** Who confirmed it, and when it last changed. */
  by: string | null;
  atMs: number | null;
}

export interface GuidedSequence {
  id: number;
  volume: string;
  kind: GuidedKind;
  state: 'active' | 'done' | 'aborted';
  user: string;
  startedMs: number;
  agent: string;
  masterTarget: string;
  /** The failed-over volume, on the master target's host. */
  out: string;
  finalSeq: number | null;
  failbackSeq: number | null;
  steps: GuidedStep[];
}

/** What each step does, as the confirmation asks. */
export const STEP_TEXT: Record<StepId, string> = {
  drain: 'Drain the source: the agent takes a final point of the stopped application\'s volume and protects it no more (the application must be stopped now)',
  failover: 'Fail over: wait until the master target has applied the final point (planned) and recover it, or recover the latest retained point (unplanned), into the failed-over volume',
  reverse: 'Reverse replication is running: the reverse agent, process server and master target answer and the original volume is in step with the failed-over one',
  failback: 'Fail back: the reverse agent takes a final point of the failed-over volume (its application must be stopped now) and the original volume is brought to exactly that point',
  resume: 'Resume forward protection: the forward agent protects the original volume again, starting with a checksum resync',
  'stop-reverse': 'The reverse daemons are stopped',
};

const ORDER: StepId[] = ['drain', 'failover', 'reverse', 'failback', 'resume', 'stop-reverse'];
/** Steps a person does on a host; the website checks the collected status before it lets the sequence go on. */
export const VERIFIED: ReadonlySet<StepId> = new Set(['reverse', 'stop-reverse']);

const LONG_MS = 24 * 3_600_000;
const APPLY_WAIT_MS = 3_600_000;

type Snap = Record<string, unknown>;
const volOf = (s: Snap | null | undefined, id: string): Snap | undefined => (Array.isArray(s?.volumes) ? (s!.volumes as Snap[]).find((v) => v?.id === id) : undefined);

export class GuidedRunner {
  private readonly running = new Set<number>();

  constructor(
    private readonly cfg: ConfigServerConfig,
    private readonly store: Store,
    private readonly relay: ActionRelay,
    private readonly collector: Collector,
    private readonly log: Logger,
  ) {
    // A step that was running when the server stopped did not finish here: it can be retried.
    for (const r of store.guidedList(1000)) {
      if (r.state !== 'active') continue;
      const g = GuidedRunner.of(r);
      let changed = false;
      for (const s of g.steps) {
        if (s.state === 'running') {
          s.state = 'failed';
          s.detail = `interrupted: the configuration server stopped while this step ran (${s.detail}); confirm it again to retry`;
          changed = true;
        }
      }
      if (changed) this.save(g);
    }
  }

  static of(r: GuidedRecord): GuidedSequence {
    return { ...(r.body as unknown as GuidedSequence), id: r.id, volume: r.volume, state: r.state };
  }

  get(id: number): GuidedSequence | null {
    const r = this.store.guided(id);
    return r ? GuidedRunner.of(r) : null;
  }

  list(limit = 50): GuidedSequence[] {
    return this.store.guidedList(limit).map(GuidedRunner.of);
  }

  private save(g: GuidedSequence): void {
    const { id, volume, state, ...body } = g;
    this.store.putGuided({ id, volume, state, body: body as unknown as Record<string, unknown> });
  }

  private audit(user: string, action: string, g: GuidedSequence, result: 'ok' | 'failed' | 'started' | 'refused', detail: string): void {
    this.store.audit({ atMs: Date.now(), user, action, target: g.volume, params: { sequence: g.id }, result, detail });
  }

  /** The reverse daemons' names (as `tidemark reverse` names them) and their entries here, if configured. */
  reverseOf(g: Pick<GuidedSequence, 'agent' | 'masterTarget'>): { names: ReverseNames; entries: Partial<Record<keyof ReverseNames, DaemonEntry>> } {
    const names = reverseNames({ agent: g.agent, masterTarget: g.masterTarget });
    const find = (n: string): DaemonEntry | undefined => this.cfg.daemons.find((d) => d.name === n);
    const entries: Partial<Record<keyof ReverseNames, DaemonEntry>> = {};
    for (const k of ['agent', 'ps', 'mt'] as const) {
      const e = find(names[k]);
      if (e) entries[k] = e;
    }
    return { names, entries };
  }

  /** Begin a sequence for `volume`: one active sequence per volume. */
  start(volume: string, kind: GuidedKind, user: string): GuidedSequence {
    const row = this.collector.fleet().find((r) => r.id === volume);
    if (!row || !row.agent || !row.masterTarget) throw tmError('TM_ERR_UNKNOWN_VOLUME', `no protected volume "${volume.slice(0, 64)}" with an agent and a master target in the fleet`, { volume: volume.slice(0, 64) });
    const busy = this.list(1000).find((g) => g.volume === volume && g.state === 'active');
    if (busy) throw tmError('TM_ERR_USAGE', `volume ${volume} is already in guided sequence #${busy.id}: finish or abort it first`, { volume });
    if (this.cfg.recoveryDir === undefined) throw tmError('TM_ERR_USAGE', 'a guided failover writes the failed-over volume under recoveryDir, which the configuration server\'s config does not set');
    const now = Date.now();
    const g: GuidedSequence = {
      id: 0, volume, kind, state: 'active', user, startedMs: now, agent: row.agent, masterTarget: row.masterTarget,
      out: path.join(csPath(this.cfg, this.cfg.recoveryDir), `${volume}-failover-${new Date(now).toISOString().replace(/[:.]/g, '')}.img`),
      finalSeq: null, failbackSeq: null,
      steps: ORDER.map((id) => ({ id, state: id === 'drain' && kind === 'unplanned' ? 'skipped' : 'pending', detail: id === 'drain' && kind === 'unplanned' ? 'unplanned: the source is not asked' : '', by: null, atMs: null })),
    };
    g.id = this.store.putGuided({ volume, state: 'active', body: {} });
    this.save(g);
    this.audit(user, `guided ${kind} failover`, g, 'started', `sequence #${g.id}`);
    return g;
  }

  /** The step an operator may confirm now: the first not done nor skipped. */
  static next(g: GuidedSequence): GuidedStep | null {
    if (g.state !== 'active') return null;
    return g.steps.find((s) => s.state !== 'done' && s.state !== 'skipped') ?? null;
  }

  /** Why a verified step is not done yet, or null when the collected status shows it is. */
  check(g: GuidedSequence, step: StepId): string | null {
    const { names, entries } = this.reverseOf(g);
    const missing = (['agent', 'ps', 'mt'] as const).filter((k) => !entries[k]);
    if (missing.length) return `the configuration server does not watch the reverse daemons ${missing.map((k) => names[k]).join(', ')}: add them to its daemons (with "standby": true) and restart it`;
    const st = (k: keyof ReverseNames) => this.collector.states.get(names[k]);
    if (step === 'stop-reverse') {
      const up = (['agent', 'ps', 'mt'] as const).filter((k) => st(k)?.up);
      return up.length ? `still answering: ${up.map((k) => names[k]).join(', ')}` : null;
    }
    const down = (['agent', 'ps', 'mt'] as const).filter((k) => !st(k)?.up);
    if (down.length) return `not answering yet: ${down.map((k) => `${names[k]} (${st(k)?.cause ?? 'not asked yet'})`).join('; ')}`;
    const a = volOf(st('agent')!.snapshot, g.volume);
    const m = volOf(st('mt')!.snapshot, g.volume);
    if (!a) return `the reverse agent ${names.agent} does not report ${g.volume}`;
    if (!m) return `the reverse master target ${names.mt} does not report ${g.volume}`;
    if (a.consistentAfterResync !== true) return `the reverse initial sync is under way (${String((a.resync as Snap | undefined)?.percent ?? '?')}%)`;
    if (Number(a.journalFiles ?? 0) > 0 || Number(a.lastCycleBytes ?? 0) > 0) return 'the reverse agent is still sending';
    if (m.consistent !== true || m.appliedSeq !== a.lastSeq) return `the reverse master target has applied #${String(m.appliedSeq)} of #${String(a.lastSeq)}`;
    return null;
  }

  /** An operator confirmed `step`: run it (in the background) or check it. */
  confirm(id: number, step: StepId, user: string): GuidedSequence {
    const g = this.get(id);
    if (!g) throw tmError('TM_ERR_USAGE', `no guided sequence #${id}`);
    const next = GuidedRunner.next(g);
    if (!next || next.id !== step) throw tmError('TM_ERR_USAGE', `sequence #${id} is ${next ? `at step "${next.id}"` : g.state}, not at "${step}"`);
    if (next.state === 'running' || this.running.has(id)) throw tmError('TM_ERR_USAGE', `step "${step}" of sequence #${id} is running`);
    next.by = user;
    next.atMs = Date.now();
    if (VERIFIED.has(step)) {
      const why = this.check(g, step);
      if (why) {
        next.state = 'waiting';
        next.detail = why;
        this.save(g);
        this.audit(user, `guided ${step}`, g, 'refused', `not yet: ${why}`);
        throw tmError('TM_ERR_USAGE', `not yet: ${why}`);
      }
      next.state = 'done';
      next.detail = step === 'reverse' ? 'the reverse daemons answer and the original volume is in step with the failed-over one' : 'the reverse daemons are stopped';
      if (step === 'stop-reverse') g.state = 'done';
      this.save(g);
      this.audit(user, `guided ${step}`, g, 'ok', next.detail);
      return g;
    }
    next.state = 'running';
    next.detail = 'started';
    this.save(g);
    this.audit(user, `guided ${step}`, g, 'started', STEP_TEXT[step]);
    this.running.add(id);
    void this.run(g, next, user).finally(() => this.running.delete(id));
    return g;
  }

  abort(id: number, user: string): void {
    const g = this.get(id);
    if (!g || g.state !== 'active') throw tmError('TM_ERR_USAGE', `no active guided sequence #${id}`);
    if (this.running.has(id)) throw tmError('TM_ERR_USAGE', `a step of sequence #${id} is running: wait for it`);
    g.state = 'aborted';
    this.save(g);
    this.audit(user, 'guided abort', g, 'ok', 'the sequence was abandoned; the daemons are as the last step left them');
  }

  private progress(g: GuidedSequence, s: GuidedStep, detail: string): void {
    s.detail = detail;
    s.atMs = Date.now();
    this.save(g);
  }

  private daemon(name: string, what: string): DaemonEntry {
    const d = this.cfg.daemons.find((x) => x.name === name);
    if (!d || !this.relay.reachable(d)) throw tmError('TM_ERR_UNSUPPORTED', `the ${what} ${name} is not reachable for actions from this server (no remote and no stateDir in its daemons entry)`);
    return d;
  }

  /** Wait until `mt` has applied `seq` of the volume; its current point then. */
  private async applied(g: GuidedSequence, s: GuidedStep, mt: DaemonEntry, seq: number, user: string): Promise<{ doneSeq: number; point: { seq: number } | null }> {
    const until = Date.now() + APPLY_WAIT_MS;
    for (;;) {
      const c = (await this.relay.ask(mt, 'current-point', new URLSearchParams({ volume: g.volume }), 30_000, user)) as { doneSeq: number; point: { seq: number } | null };
      if (c.doneSeq >= seq) return c;
      if (Date.now() > until) throw tmError('TM_ERR_CONNECTION', `${mt.name} has applied #${c.doneSeq}, not #${seq}, after ${APPLY_WAIT_MS / 60_000} minutes: is the process server running?`);
      this.progress(g, s, `waiting for ${mt.name} to apply the final point #${seq} (applied #${c.doneSeq})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  private async run(g: GuidedSequence, s: GuidedStep, user: string): Promise<void> {
    const volume = new URLSearchParams({ volume: g.volume });
    try {
      let detail: string;
      switch (s.id) {
        case 'drain': {
          const p = await this.relay.ask(this.daemon(g.agent, 'agent'), 'drain', volume, LONG_MS, user);
          g.finalSeq = Number(p.seq);
          detail = `final point #${g.finalSeq}; ${g.agent} protects ${g.volume} no more`;
          break;
        }
        case 'failover': {
          const mt = this.daemon(g.masterTarget, 'master target');
          const params = new URLSearchParams({ volume: g.volume, out: g.out, force: 'true' });
          if (g.kind === 'planned') {
            if (g.finalSeq === null) throw tmError('TM_ERR_USAGE', 'no final point: the drain did not finish');
            await this.applied(g, s, mt, g.finalSeq, user);
            params.set('seq', String(g.finalSeq));
          } else params.set('latest', 'true');
          this.progress(g, s, `recovering into ${g.out}`);
          const r = (await this.relay.ask(mt, 'recover', params, LONG_MS, user)) as { point?: { seq: number; atMs: number }; method?: string };
          if (g.kind === 'unplanned') g.finalSeq = r.point?.seq ?? null;
          detail = `point #${String(r.point?.seq)} recovered into ${g.out} (${String(r.method)}, verified)${g.kind === 'planned' ? ': no data lost' : `: writes made on the source after ${new Date(r.point?.atMs ?? 0).toISOString()} are not in it`}; start the application on it`;
          break;
        }
        case 'failback': {
          const { names } = this.reverseOf(g);
          const ra = this.daemon(names.agent, 'reverse agent');
          const rm = this.daemon(names.mt, 'reverse master target');
          const p = await this.relay.ask(ra, 'drain', volume, LONG_MS, user);
          g.failbackSeq = Number(p.seq);
          this.progress(g, s, `final point #${g.failbackSeq} of the failed-over volume; waiting for ${names.mt} to apply it`);
          const c = await this.applied(g, s, rm, g.failbackSeq, user);
          if (c.doneSeq !== g.failbackSeq || c.point?.seq !== g.failbackSeq) {
            throw tmError('TM_ERR_POINT_NOT_FOUND', `the original volume is at #${c.doneSeq}${c.point ? '' : ' (not a recovery point)'}, not at the final point #${g.failbackSeq}`);
          }
          detail = `the original volume holds the final point #${g.failbackSeq} of the failed-over volume: no data lost`;
          break;
        }
        case 'resume': {
          const r = await this.relay.ask(this.daemon(g.agent, 'agent'), 'resume', volume, LONG_MS, user);
          detail = r.resumed ? `${g.agent} protects ${g.volume} again, starting with a checksum resync (only the blocks changed since the failover travel)` : `${g.agent} was not drained: it was protecting ${g.volume} already (run a resync to be sure the replica is in step)`;
          break;
        }
        default:
          throw tmError('TM_ERR_USAGE', `step "${s.id}" is checked, not run`);
      }
      s.state = 'done';
      this.progress(g, s, detail);
      this.audit(user, `guided ${s.id}`, g, 'ok', detail);
    } catch (e) {
      s.state = 'failed';
      const detail = `${codeOf(e)}: ${(e as Error).message}`;
      this.progress(g, s, detail);
      this.audit(user, `guided ${s.id}`, g, 'failed', detail);
      this.log.warn({ sequence: g.id, step: s.id, err: detail }, 'guided step failed');
    }
  }

  /** The commands a person runs for a step done on a host. */
  commands(g: GuidedSequence): { reverse: string[]; register: Array<Record<string, unknown>>; stop: string[] } {
    const fb = this.cfg.failback;
    const { names } = this.reverseOf(g);
    const cfgOf = (name: string, fallback: string): string => this.cfg.daemons.find((d) => d.name === name)?.configFile ?? fallback;
    const dir = fb ? path.join(fb.dir, g.volume) : `<folder for the reverse configs>/${g.volume}`;
    const q = (s: string): string => (/^[A-Za-z0-9_./:=@-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
    const reverse = [
      ['tidemark', 'reverse', g.volume, '--config', cfgOf(g.masterTarget, `<${g.masterTarget} config>`), '--agent-config', cfgOf(g.agent, `<${g.agent} config>`), '--dir', dir, '--source', g.out,
        '--pki', fb?.pki ?? '<CA folder>',
        ...(fb?.primaryHost ? ['--primary-host', fb.primaryHost] : []), ...(fb?.secondaryHost ? ['--secondary-host', fb.secondaryHost] : []),
        ...(fb?.psPort ? ['--ps-port', String(fb.psPort)] : []), ...(fb?.mtPort ? ['--mt-port', String(fb.mtPort)] : []),
        ...(fb?.agentOperatorPort ? ['--agent-operator-port', String(fb.agentOperatorPort)] : []), ...(fb?.psOperatorPort ? ['--ps-operator-port', String(fb.psOperatorPort)] : []),
        ...(fb?.mtOperatorPort ? ['--mt-operator-port', String(fb.mtOperatorPort)] : []), ...(fb?.operatorClients ? ['--operator-clients', fb.operatorClients.join(',')] : [])].map(q).join(' '),
      `tidemark master-target --config ${q(path.join(dir, 'master-target.json'))}    # at the primary site`,
      `tidemark process-server --config ${q(path.join(dir, 'process-server.json'))}    # at the secondary site`,
      `tidemark agent --config ${q(path.join(dir, 'agent.json'))}    # at the secondary site`,
    ];
    // Reached at its remote operator port when the reverse command gives it one, else through its state folder.
    const where = (host: string | undefined, port: number | undefined, stateDir: string): Record<string, unknown> =>
      (port ? { remote: { host: host ?? '127.0.0.1', port } } : { stateDir: path.join(dir, stateDir) });
    const register = [
      { name: names.agent, role: 'agent', ...where(fb?.secondaryHost, fb?.agentOperatorPort, 'agent-state'), standby: true },
      { name: names.ps, role: 'process-server', ...where(fb?.secondaryHost, fb?.psOperatorPort, 'ps-cache'), standby: true },
      { name: names.mt, role: 'master-target', ...where(fb?.primaryHost, fb?.mtOperatorPort, 'mt-state'), standby: true },
    ];
    const stop = [`stop the three reverse daemons (${names.agent}, ${names.ps}, ${names.mt}): systemctl stop, or end the processes started above`, `then the folder ${dir} can be deleted`];
    return { reverse, register, stop };
  }
}
