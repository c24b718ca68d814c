// Recovery plans (ASR's): ordered groups of volumes failed over together, with pre and post steps
// (scripts, a person's approval, waits) around each group. A run is a test (each volume's latest point
// exposed as a test failover; replication goes on) or a real failover (each volume's latest point
// recovered under recoveryDir). Each step's progress is written to the store as it changes, so the
// website shows it live and the report survives a restart; a run interrupted by one is marked failed.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { codeOf, tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { ActionRelay } from './actions.js';
import { csPath, type ConfigServerConfig, type DaemonEntry, type PlanConfig, type PlanStep } from './config.js';
import type { PlanRunRecord, Store } from './store.js';

export interface StepProgress {
  group: string;
  phase: 'pre' | 'failover' | 'post';
  name: string;
  kind: PlanStep['kind'] | 'failover';
  state: 'pending' | 'running' | 'waiting-approval' | 'done' | 'failed' | 'skipped';
  startedMs: number | null;
  endedMs: number | null;
  detail: string;
  /** What a failover step made: per volume, the image (and its point). */
  outputs?: Array<{ volume: string; image: string; seq: number | null }>;
}

const OUTPUT_LIMIT = 4000;

function runScript(run: string[], timeoutMs: number, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(run[0]!, run.slice(1), { timeout: timeoutMs, env: { ...process.env, ...env }, maxBuffer: 1 << 20 }, (e, stdout, stderr) => {
      const out = `${stdout}${stderr}`.slice(-OUTPUT_LIMIT);
      if (e) reject(new Error(`${(e as NodeJS.ErrnoException & { killed?: boolean }).killed ? `timed out after ${timeoutMs} ms` : `exit ${String((e as { code?: unknown }).code)}`}: ${out}`));
      else resolve(out);
    });
  });
}

export class PlanRunner {
  private readonly approvals = new Map<number, () => void>();
  private readonly running = new Map<number, Promise<void>>();

  constructor(private readonly cfg: ConfigServerConfig, private readonly store: Store, private readonly relay: ActionRelay, private readonly log: Logger) {
    // A run the last process was in the middle of cannot go on: its steps were not finished by anybody.
    for (const r of store.planRuns(1000)) {
      if (r.state === 'running' || r.state === 'waiting-approval') store.putPlanRun({ ...r, state: 'failed', finishedMs: Date.now(), steps: (r.steps as StepProgress[]).map((s) => (s.state === 'running' || s.state === 'waiting-approval' ? { ...s, state: 'failed', detail: 'the configuration server stopped during this step' } : s)) });
    }
  }

  plan(name: string): PlanConfig {
    const p = this.cfg.plans.find((x) => x.name === name);
    if (!p) throw tmError('TM_ERR_USAGE', `no recovery plan "${name.slice(0, 64)}" (plans: ${this.cfg.plans.map((x) => x.name).join(', ') || 'none'})`);
    return p;
  }

  /** Start a run; it goes on in the background. */
  start(name: string, test: boolean, user: string): number {
    const plan = this.plan(name);
    const steps: StepProgress[] = plan.groups.flatMap((g) => [
      ...g.pre.map((s): StepProgress => ({ group: g.name, phase: 'pre', name: s.name, kind: s.kind, state: 'pending', startedMs: null, endedMs: null, detail: '' })),
      { group: g.name, phase: 'failover', name: `${test ? 'test failover' : 'failover'} of ${g.volumes.map((v) => v.id).join(', ')}`, kind: 'failover', state: 'pending', startedMs: null, endedMs: null, detail: '' } as StepProgress,
      ...g.post.map((s): StepProgress => ({ group: g.name, phase: 'post', name: s.name, kind: s.kind, state: 'pending', startedMs: null, endedMs: null, detail: '' })),
    ]);
    const record: Omit<PlanRunRecord, 'id'> = { plan: name, test, user, startedMs: Date.now(), finishedMs: null, state: 'running', steps };
    const id = this.store.putPlanRun(record);
    this.running.set(id, this.execute(id, plan, { ...record, id }).finally(() => this.running.delete(id)));
    return id;
  }

  /** A person approves the step a run is waiting at. */
  approve(id: number): boolean {
    const go = this.approvals.get(id);
    if (!go) return false;
    this.approvals.delete(id);
    go();
    return true;
  }

  /** Wait for a run to end (tests, the CLI in-process). */
  async settle(id: number): Promise<PlanRunRecord | null> {
    await this.running.get(id);
    return this.store.planRun(id);
  }

  private async execute(id: number, plan: PlanConfig, run: PlanRunRecord): Promise<void> {
    const steps = run.steps as StepProgress[];
    const save = (state: PlanRunRecord['state'] = run.state): void => {
      run.state = state;
      this.store.putPlanRun(run);
    };
    const env = { TIDEMARK_PLAN: plan.name, TIDEMARK_PLAN_TEST: run.test ? '1' : '0', TIDEMARK_PLAN_RUN: String(id) };
    let i = 0;
    try {
      for (const g of plan.groups) {
        for (const [phase, list] of [['pre', g.pre], ['failover', null], ['post', g.post]] as const) {
          for (const s of list ?? [null]) {
            const p = steps[i++]!;
            p.state = 'running';
            p.startedMs = Date.now();
            save();
            if (phase === 'failover') {
              p.outputs = await this.failover(g.volumes, run.test, plan.name, id);
              p.detail = p.outputs.map((o) => `${o.volume} #${o.seq ?? '?'} -> ${o.image}`).join('; ');
            } else if (s!.kind === 'script') {
              p.detail = await runScript(s!.run, s!.timeoutMs, { ...env, TIDEMARK_PLAN_GROUP: g.name });
            } else if (s!.kind === 'wait') {
              await new Promise((r) => setTimeout(r, s!.ms));
              p.detail = `waited ${s!.ms} ms`;
            } else {
              p.state = 'waiting-approval';
              p.detail = s!.prompt;
              save('waiting-approval');
              await new Promise<void>((resolve) => this.approvals.set(id, resolve));
              p.detail = `${s!.prompt} — approved`;
              run.state = 'running';
            }
            p.state = 'done';
            p.endedMs = Date.now();
            save('running');
          }
        }
      }
      run.finishedMs = Date.now();
      save('succeeded');
      this.log.info({ plan: plan.name, run: id, test: run.test }, 'recovery plan succeeded');
    } catch (e) {
      const p = steps[i - 1];
      if (p) {
        p.state = 'failed';
        p.endedMs = Date.now();
        p.detail = `${codeOf(e)}: ${(e as Error).message}`.slice(0, OUTPUT_LIMIT);
      }
      for (const rest of steps.slice(i)) rest.state = 'skipped';
      run.finishedMs = Date.now();
      save('failed');
      this.log.warn({ plan: plan.name, run: id, err: (e as Error).message }, 'recovery plan failed');
    }
  }

  /** One group's volumes, together: each volume's latest point as a test failover, or recovered to a file. */
  private async failover(volumes: PlanConfig['groups'][number]['volumes'], test: boolean, plan: string, id: number): Promise<NonNullable<StepProgress['outputs']>> {
    const mt = (name: string): DaemonEntry => this.relay.daemon(name, 'master target', volumes.map((v) => v.id).join(','));
    const done = await Promise.all(volumes.map(async (v) => {
      if (test) {
        const r = await this.relay.ask(mt(v.masterTarget), 'test-failover-start', new URLSearchParams({ volume: v.id, latest: 'true' })) as { image?: string; recovered?: { point?: { seq?: number } } };
        return { volume: v.id, image: String(r.image), seq: r.recovered?.point?.seq ?? null };
      }
      if (this.cfg.recoveryDir === undefined) throw tmError('TM_ERR_USAGE', 'a real failover writes under recoveryDir, which the configuration server\'s config does not set');
      const out = path.join(csPath(this.cfg, this.cfg.recoveryDir), `${plan}-${id}-${v.id}.img`);
      const r = await this.relay.ask(mt(v.masterTarget), 'recover', new URLSearchParams({ volume: v.id, latest: 'true', out })) as { point?: { seq?: number } };
      return { volume: v.id, image: out, seq: r.point?.seq ?? null };
    }));
    return done;
  }

  /** A test run's test failovers removed. */
  async cleanup(id: number): Promise<string[]> {
    const run = this.store.planRun(id);
    if (!run) throw tmError('TM_ERR_USAGE', `no plan run #${id}`);
    if (!run.test) throw tmError('TM_ERR_USAGE', `plan run #${id} was a real failover: there is no test to clean up`);
    const plan = this.plan(run.plan);
    const out: string[] = [];
    for (const g of plan.groups) for (const v of g.volumes) {
      await this.relay.ask(this.relay.daemon(v.masterTarget, 'master target', v.id), 'test-failover-cleanup', new URLSearchParams({ volume: v.id }));
      out.push(v.id);
    }
    return out;
  }

  /** The report of a run, as text. */
  static report(r: PlanRunRecord): string {
    const steps = r.steps as StepProgress[];
    const dur = (s: StepProgress): string => (s.startedMs && s.endedMs ? `${((s.endedMs - s.startedMs) / 1000).toFixed(1)} s` : '-');
    const lines = [
      `recovery plan ${r.plan}, run #${r.id} (${r.test ? 'test failover' : 'FAILOVER'}) by ${r.user}: ${r.state.toUpperCase()}`,
      `started ${new Date(r.startedMs).toISOString()}${r.finishedMs ? `, took ${((r.finishedMs - r.startedMs) / 1000).toFixed(1)} s` : ''}`,
      ...steps.map((s) => `  [${s.state}] ${s.group} / ${s.phase}: ${s.name} (${dur(s)})${s.detail ? ` — ${s.detail.split('\n').filter(Boolean).slice(-3).join(' | ')}` : ''}`),
    ];
    return lines.join('\n');
  }
}
