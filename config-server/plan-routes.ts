// The recovery plans' pages, mounted on the website (plans.ts runs them): the list, a confirmation, a
// run's live progress with its approval button and report, and the cleanup of a test run.
import { codeOf } from '../common/errors.js';
import { formBody, redirect, sendHtml, sendJson, type Req, type RouteHelpers } from './http-util.js';
import { confirmPage, plansPage, resultPage, runPage } from './pages.js';
import { PlanRunner, type StepProgress } from './plans.js';
import type { ConfigServerConfig } from './config.js';
import type { Store } from './store.js';

export interface PlanRoutes {
  /** Answer `r` if it is a plans page; false if it is not one. */
  route(r: Req, h: RouteHelpers): Promise<boolean>;
}

export function planRoutes(cfg: ConfigServerConfig, store: Store, runner: PlanRunner): PlanRoutes {
  /** A POST an operator confirmed; else answered with the refusal (and false). */
  async function checkedPost(r: Req, h: RouteHelpers, action: string, target: string): Promise<boolean> {
    const form = await formBody(r.req);
    const why = h.postRefusal(r, form, true);
    if (why) return (h.forbidden(r, why, action), false);
    if (r.viewer!.role !== 'operator') return (h.forbidden(r, `${r.viewer!.user} is a viewer: only an operator may ${action}`, action), false);
    if (form.get('confirm') !== action.split(' ').pop()) return (h.forbidden(r, 'the action was not confirmed', action), false);
    void target;
    return true;
  }

  return {
    async route(r, h) {
      const p = r.url.pathname;
      const m = r.req.method;
      const v = r.viewer!;
      if (m === 'GET' && p === '/plans') {
        sendHtml(r.res, 200, plansPage(v, cfg.plans.map((x) => ({ name: x.name, groups: x.groups.length })), store.planRuns(50)));
        return true;
      }
      let x = /^\/plans\/([A-Za-z0-9._-]+)\/confirm$/.exec(p);
      if (m === 'GET' && x) {
        const test = r.url.searchParams.get('test') !== '0';
        if (v.role !== 'operator') return (h.forbidden(r, `${v.user} is a viewer: only an operator may run a plan`, 'plan run'), true);
        const what = test ? 'Run the recovery plan as a TEST failover (replication goes on)' : 'Run the recovery plan as a REAL failover';
        sendHtml(r.res, 200, confirmPage(v, x[1]!, test ? 'run-test' : 'run-failover', what, `/plans/${x[1]!}/run`));
        return true;
      }
      x = /^\/plans\/([A-Za-z0-9._-]+)\/run$/.exec(p);
      if (m === 'POST' && x) {
        const form = await formBody(r.req);
        const why = h.postRefusal(r, form, true);
        if (why) return (h.forbidden(r, why, 'plan run'), true);
        if (v.role !== 'operator') return (h.forbidden(r, `${v.user} is a viewer: only an operator may run a plan`, 'plan run'), true);
        const confirm = form.get('confirm');
        if (confirm !== 'run-test' && confirm !== 'run-failover') return (h.forbidden(r, 'the plan run was not confirmed', 'plan run'), true);
        try {
          const id = runner.start(x[1]!, confirm === 'run-test', v.user);
          h.audit(v.user, confirm === 'run-test' ? 'plan run --test' : 'plan run', x[1]!, { run: id }, 'started', `run #${id}`);
          redirect(r.res, `/runs/${id}`);
        } catch (e) {
          h.audit(v.user, 'plan run', x[1]!, {}, 'failed', `${codeOf(e)}: ${(e as Error).message}`);
          sendHtml(r.res, 400, resultPage(v, `plan ${x[1]!}`, false, `${codeOf(e)}: ${(e as Error).message}`, '/plans'));
        }
        return true;
      }
      x = /^\/(api\/)?runs\/(\d+)$/.exec(p);
      if (m === 'GET' && x) {
        const run = store.planRun(Number(x[2]));
        if (!run) return (sendJson(r.res, 404, { code: 'TM_ERR_USAGE', message: 'no such run' }), true);
        if (x[1]) sendJson(r.res, 200, { ...run, report: PlanRunner.report(run) });
        else sendHtml(r.res, 200, runPage(v, run, run.steps as StepProgress[], PlanRunner.report(run)));
        return true;
      }
      x = /^\/runs\/(\d+)\/(approve|cleanup)$/.exec(p);
      if (m === 'POST' && x) {
        const id = Number(x[1]);
        const action = x[2] === 'approve' ? 'plan approve' : 'plan cleanup';
        if (!(await checkedPost(r, h, action, String(id)))) return true;
        const run = store.planRun(id);
        try {
          if (x[2] === 'approve') {
            if (!runner.approve(id)) throw new Error(`run #${id} is not waiting for an approval`);
            h.audit(v.user, action, run?.plan ?? '', { run: id }, 'ok', `run #${id}`);
            redirect(r.res, `/runs/${id}`);
          } else {
            const done = await runner.cleanup(id);
            h.audit(v.user, action, run?.plan ?? '', { run: id }, 'ok', `cleaned up ${done.join(', ')}`);
            sendHtml(r.res, 200, resultPage(v, `clean up run #${id}`, true, `test failovers removed: ${done.join(', ')}`, `/runs/${id}`));
          }
        } catch (e) {
          h.audit(v.user, action, run?.plan ?? '', { run: id }, 'failed', `${codeOf(e)}: ${(e as Error).message}`);
          sendHtml(r.res, 400, resultPage(v, `${action} #${id}`, false, `${codeOf(e)}: ${(e as Error).message}`, `/runs/${id}`));
        }
        return true;
      }
      return false;
    },
  };
}
