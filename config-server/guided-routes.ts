// The guided failover's pages, mounted on the website (guided.ts runs the sequence): the list with a start
// per volume, a sequence's page with each step's state, what to run on a host where a person must act, and
// the confirmation of the next step. Every POST passes the site's checks (Origin, CSRF), needs the operator
// role and a confirmation naming the step; every attempt is in the audit log.
import { codeOf } from '../common/errors.js';
import { formBody, redirect, sendHtml, sendJson, type Req, type RouteHelpers } from './http-util.js';
import { confirmPage, resultPage } from './pages.js';
import { guidedListPage, guidedPage } from './guided-pages.js';
import { GuidedRunner, STEP_TEXT, type GuidedKind, type StepId } from './guided.js';
import type { Collector } from './collector.js';
import type { PlanRoutes } from './plan-routes.js';

const STEPS = Object.keys(STEP_TEXT);

export function guidedRoutes(runner: GuidedRunner, collector: Collector): PlanRoutes {
  return {
    async route(r: Req, h: RouteHelpers) {
      const p = r.url.pathname;
      const m = r.req.method;
      const v = r.viewer!;
      const operator = (action: string): boolean => {
        if (v.role === 'operator') return true;
        h.forbidden(r, `${v.user} is a viewer: only an operator may ${action}`, action);
        return false;
      };
      if (m === 'GET' && p === '/guided') {
        const active = new Set(runner.list(1000).filter((g) => g.state === 'active').map((g) => g.volume));
        sendHtml(r.res, 200, guidedListPage(v, collector.fleet().filter((x) => x.agent && x.masterTarget).map((x) => ({ id: x.id, busy: active.has(x.id) })), runner.list(50)));
        return true;
      }
      let x = /^\/guided\/start\/([^/]+)\/(planned|unplanned)$/.exec(p);
      if (x) {
        const volume = decodeURIComponent(x[1]!);
        const kind = x[2] as GuidedKind;
        const action = `guided ${kind} failover`;
        if (m === 'GET') {
          if (!operator(action)) return true;
          const what = kind === 'planned'
            ? 'Begin a PLANNED failover (no data loss: the source is drained to a final point), then reverse replication and failback, step by step'
            : 'Begin an UNPLANNED failover (the latest retained point, without the source), then reverse replication and failback, step by step';
          sendHtml(r.res, 200, confirmPage(v, volume, kind, what, `/guided/start/${encodeURIComponent(volume)}/${kind}`));
          return true;
        }
        if (m !== 'POST') return false;
        const form = await formBody(r.req);
        const why = h.postRefusal(r, form, true);
        if (why) return (h.forbidden(r, why, action), true);
        if (!operator(action)) return true;
        if (form.get('confirm') !== kind) return (h.forbidden(r, 'the sequence was not confirmed', action), true);
        try {
          const g = runner.start(volume, kind, v.user);
          redirect(r.res, `/guided/${g.id}`);
        } catch (e) {
          h.audit(v.user, action, volume, {}, 'failed', `${codeOf(e)}: ${(e as Error).message}`);
          sendHtml(r.res, 400, resultPage(v, action, false, `${codeOf(e)}: ${(e as Error).message}`, '/guided'));
        }
        return true;
      }
      x = /^\/(api\/)?guided\/(\d+)$/.exec(p);
      if (m === 'GET' && x) {
        const g = runner.get(Number(x[2]));
        if (!g) return (sendJson(r.res, 404, { code: 'TM_ERR_USAGE', message: 'no such sequence' }), true);
        const next = GuidedRunner.next(g);
        const waiting = next && (next.id === 'reverse' || next.id === 'stop-reverse') ? runner.check(g, next.id) : null;
        if (x[1]) sendJson(r.res, 200, { ...g, next: next?.id ?? null, waiting });
        else sendHtml(r.res, 200, guidedPage(v, g, next, waiting, runner.commands(g), runner.reverseOf(g)));
        return true;
      }
      x = /^\/guided\/(\d+)\/(confirm|step|abort)\/?([a-z-]*)$/.exec(p);
      if (x) {
        const id = Number(x[1]);
        const step = x[3] ?? '';
        if (x[2] === 'confirm' && m === 'GET') {
          if (!STEPS.includes(step)) return false;
          if (!operator(`guided ${step}`)) return true;
          sendHtml(r.res, 200, confirmPage(v, `sequence #${id}`, step, STEP_TEXT[step as StepId], `/guided/${id}/step/${step}`));
          return true;
        }
        if (m !== 'POST') return false;
        const action = x[2] === 'abort' ? 'guided abort' : `guided ${step}`;
        const form = await formBody(r.req);
        const why = h.postRefusal(r, form, true);
        if (why) return (h.forbidden(r, why, action), true);
        if (!operator(action)) return true;
        if (form.get('confirm') !== (x[2] === 'abort' ? 'abort' : step)) return (h.forbidden(r, 'the step was not confirmed', action), true);
        try {
          if (x[2] === 'abort') runner.abort(id, v.user);
          else {
            if (!STEPS.includes(step)) return false;
            runner.confirm(id, step as StepId, v.user);
          }
          redirect(r.res, `/guided/${id}`);
        } catch (e) {
          // The runner audited what it refused; a refusal before it (no such sequence) is audited here.
          if (!/^not yet: /.test((e as Error).message)) h.audit(v.user, action, `sequence #${id}`, {}, 'refused', `${codeOf(e)}: ${(e as Error).message}`);
          sendHtml(r.res, 409, resultPage(v, `${action} (#${id})`, false, `${codeOf(e)}: ${(e as Error).message}`, `/guided/${id}`));
        }
        return true;
      }
      return false;
    },
  };
}
