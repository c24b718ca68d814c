// The website's request handler. Every request: a Host the site is known by (DNS rebinding). Every POST:
// an Origin equal to the site's own and, but for the login form, the session's CSRF token — the session
// cookie is also SameSite=Strict, so a cross-site form carries none. Actions need the operator role and a
// confirmation naming the action; each attempt (done, failed or refused) goes to the audit log.
import type http from 'node:http';
import { codeOf } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { ActionRelay } from './actions.js';
import { DUMMY_HASH, newToken, sameToken, tokenHash, verifyPassword } from './auth.js';
import type { Collector } from './collector.js';
import type { ConfigServerConfig } from './config.js';
import { machineGroups, type DaemonRow } from './fleet.js';
import { cookies, formBody, redirect, send, sendHtml, sendJson, SESSION_COOKIE, type Req } from './http-util.js';
import { auditPage, confirmPage, fleetPage, fleetTable, loginPage, resultPage, VOLUME_ACTIONS, volumePage, type Alert, type VolumeAction, type Viewer } from './pages.js';
import { SCRIPT, STYLE } from './assets.js';
import { tierFor, type Store } from './store.js';
import type { Html } from './html.js';
import type { PlanRoutes } from './plan-routes.js';


export interface WebDeps {
  cfg: ConfigServerConfig;
  store: Store;
  collector: Collector;
  relay: ActionRelay;
  alerts: () => Alert[];
  plans: PlanRoutes | null;
  guided?: PlanRoutes | null;
  log: Logger;
}

export const RANGES: Record<string, number> = { hour: 3_600_000, day: 86_400_000, week: 7 * 86_400_000 };

/** "host:port" or "[::1]:port" → "host" / "::1". */
function hostName(hostHeader: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(hostHeader) ?? /^([^:]+)(?::\d+)?$/.exec(hostHeader);
  return (m?.[1] ?? '').toLowerCase();
}

export function webHandler(d: WebDeps): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const hosts = new Set((d.cfg.hostnames ?? [d.cfg.listen.host, 'localhost', '127.0.0.1']).map((h) => h.toLowerCase()));

  const audit = (user: string, action: string, target: string, params: Record<string, unknown>, result: 'ok' | 'refused' | 'failed' | 'started', detail: string): void => {
    d.store.audit({ atMs: Date.now(), user, action, target, params, result, detail });
    d.log.info({ user, action, target, result }, 'audit');
  };

  const forbidden = (r: Req, why: string, action: string): void => {
    audit(r.viewer?.user ?? '-', action, r.url.pathname, { method: r.req.method }, 'refused', why);
    if (r.url.pathname.startsWith('/api/') || r.req.method !== 'GET') sendJson(r.res, 403, { code: 'TM_ERR_FORBIDDEN', message: why });
    else sendHtml(r.res, 403, `<!doctype html><p>TM_ERR_FORBIDDEN: ${why.replace(/[<&]/g, '')}</p>`);
  };

  function viewerOf(req: http.IncomingMessage): { viewer: Viewer | null; sessionHash: string | null } {
    const token = cookies(req).get(SESSION_COOKIE);
    if (!token) return { viewer: null, sessionHash: null };
    const h = tokenHash(token);
    const s = d.store.getSession(h);
    if (!s || s.expiresMs < Date.now()) return { viewer: null, sessionHash: null };
    return { viewer: { user: s.user, role: s.role, csrf: s.csrf }, sessionHash: h };
  }

  /** Why a state-changing request is refused, or null: same origin, and the session's token. */
  function postRefusal(r: Req, form: URLSearchParams, needSession: boolean): string | null {
    const origin = r.req.headers.origin;
    const own = `https://${r.req.headers.host}`;
    if (origin === undefined) return 'a form without an Origin header is refused (cross-site requests are)';
    if (origin !== own) return `a request from another origin (${origin.slice(0, 200)}) is refused`;
    const site = r.req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return `a ${String(site)} request is refused`;
    if (!needSession) return null;
    if (!r.viewer) return 'not logged in';
    const token = form.get('csrf') ?? '';
    if (!sameToken(token, r.viewer.csrf)) return 'the form\'s CSRF token is missing or wrong (reload the page)';
    return null;
  }

  const daemonRows = (): DaemonRow[] => d.cfg.daemons.map((x) => {
    const s = d.collector.states.get(x.name);
    const cause = s ? s.cause : 'not asked yet';
    // A reverse daemon that is not running is expected to be so, outside a failover.
    return { name: x.name, role: x.role, up: s?.up ?? false, cause: x.standby && !s?.up ? `standby (runs during reverse replication only): ${cause ?? ''}` : cause, sinceMs: s?.sinceMs ?? 0, lastOkMs: s?.lastOkMs ?? null };
  });

  async function login(r: Req): Promise<void> {
    const form = await formBody(r.req);
    const why = postRefusal(r, form, false);
    if (why) return forbidden(r, why, 'login');
    const name = form.get('user') ?? '';
    const user = d.cfg.users.find((u) => u.name === name);
    const ok = await verifyPassword(form.get('password') ?? '', user?.passwordHash ?? DUMMY_HASH);
    if (!user || !ok) {
      audit(name.slice(0, 64) || '-', 'login', '', {}, 'refused', 'wrong user or password');
      return sendHtml(r.res, 401, loginPage('Wrong user or password.'));
    }
    const token = newToken();
    d.store.putSession({ idHash: tokenHash(token), user: user.name, role: user.role, csrf: newToken(), expiresMs: Date.now() + d.cfg.sessionTtlMs });
    audit(user.name, 'login', '', { role: user.role }, 'ok', '');
    redirect(r.res, '/', { 'set-cookie': `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${Math.floor(d.cfg.sessionTtlMs / 1000)}` });
  }

  async function volumeAction(r: Req, id: string, action: string): Promise<void> {
    const form = await formBody(r.req);
    const why = postRefusal(r, form, true);
    if (why) return forbidden(r, why, action);
    const v = r.viewer!;
    if (v.role !== 'operator') return forbidden(r, `${v.user} is a viewer: only an operator may ${action}`, action);
    if (!(action in VOLUME_ACTIONS)) return send(r.res, 404, 'text/plain', 'no such action');
    if (form.get('confirm') !== action) return forbidden(r, 'the action was not confirmed', action);
    const row = d.collector.fleet().find((x) => x.id === id);
    if (!row) return send(r.res, 404, 'text/plain', 'no such volume');
    try {
      const out = await d.relay.run(action as VolumeAction, row, v.user);
      audit(v.user, action, id, {}, 'ok', JSON.stringify(out));
      sendHtml(r.res, 200, resultPage(v, `${action} ${id}`, true, JSON.stringify(out, null, 2), `/volume/${encodeURIComponent(id)}`));
    } catch (e) {
      const detail = `${codeOf(e)}: ${(e as Error).message}`;
      audit(v.user, action, id, {}, 'failed', detail);
      sendHtml(r.res, 200, resultPage(v, `${action} ${id}`, false, detail, `/volume/${encodeURIComponent(id)}`));
    }
  }

  function history(r: Req, id: string): void {
    const span = RANGES[r.url.searchParams.get('range') ?? 'hour'] ?? RANGES.hour!;
    const tier = tierFor(span);
    const rows = d.store.history(id, tier, Date.now() - span);
    const samples = rows.map((s, i) => {
      const prev = rows[i - 1];
      const dt = prev ? (s.atMs - prev.atMs) / 1000 : 0;
      const dBytes = prev && s.appliedBytes !== null && prev.appliedBytes !== null ? s.appliedBytes - prev.appliedBytes : 0;
      // A master target restart resets its counter: no negative throughput.
      return { t: s.atMs, rpo: s.rpoMs, agentBacklog: s.agentBacklog, psBacklog: s.psBacklog, mtBacklog: s.mtBacklog, throughput: dt > 0 ? Math.max(0, dBytes / dt) : 0, mode: s.mode, appliedSeq: s.appliedSeq };
    });
    sendJson(r.res, 200, { volume: id, tier: tier.id, bucketMs: tier.bucketMs, samples });
  }

  let table: { round: number; html: Html | null } = { round: -1, html: null };

  async function route(r: Req): Promise<void> {
    const p = r.url.pathname;
    const m = r.req.method;
    if (m === 'GET' && p === '/assets/app.js') return send(r.res, 200, 'text/javascript; charset=utf-8', SCRIPT);
    if (m === 'GET' && p === '/assets/style.css') return send(r.res, 200, 'text/css; charset=utf-8', STYLE);
    if (p === '/login') return m === 'POST' ? login(r) : sendHtml(r.res, 200, loginPage(null));
    if (!r.viewer) {
      if (m === 'GET' && !p.startsWith('/api/')) return redirect(r.res, '/login');
      // A cross-site form arrives without the (SameSite=Strict) cookie: say which check it failed first.
      const why = m === 'POST' ? postRefusal(r, new URLSearchParams(), false) : null;
      return forbidden(r, why ?? 'not logged in', m === 'POST' ? p.split('/').pop() || 'post' : 'read');
    }
    const v = r.viewer;
    if (m === 'POST' && p === '/logout') {
      const form = await formBody(r.req);
      const why = postRefusal(r, form, true);
      if (why) return forbidden(r, why, 'logout');
      d.store.deleteSession(r.sessionHash!);
      audit(v.user, 'logout', '', {}, 'ok', '');
      return redirect(r.res, '/login', { 'set-cookie': `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0` });
    }
    if (m === 'GET' && p === '/') {
      if (table.round !== d.collector.rounds || table.html === null) table = { round: d.collector.rounds, html: fleetTable(d.collector.fleet(), d.collector.rounds, d.cfg.intervalMs) };
      return sendHtml(r.res, 200, fleetPage(v, daemonRows(), table.html!, d.alerts()));
    }
    if (m === 'GET' && p === '/api/fleet') {
      const volumes = d.collector.fleet();
      return sendJson(r.res, 200, { round: d.collector.rounds, intervalMs: d.cfg.intervalMs, daemons: daemonRows(), machines: machineGroups(volumes).map((g) => g.machine), volumes, alerts: d.alerts() });
    }
    if (m === 'GET' && p === '/api/session') return sendJson(r.res, 200, { user: v.user, role: v.role, csrf: v.csrf });
    if (m === 'GET' && p === '/audit') return sendHtml(r.res, 200, auditPage(v, d.store.auditList(500)));
    let x = /^\/api\/volume\/([^/]+)\/history$/.exec(p);
    if (m === 'GET' && x) return history(r, decodeURIComponent(x[1]!));
    x = /^\/volume\/([^/]+)$/.exec(p);
    if (m === 'GET' && x) {
      const id = decodeURIComponent(x[1]!);
      const row = d.collector.fleet().find((y) => y.id === id);
      if (!row) return send(r.res, 404, 'text/plain', 'no such volume');
      const tf = await d.relay.testFailovers(row);
      const range = RANGES[r.url.searchParams.get('range') ?? ''] ? r.url.searchParams.get('range')! : 'hour';
      return sendHtml(r.res, 200, volumePage(v, row, d.store.points(id, 200), d.store.auditList(50, id), tf, range));
    }
    x = /^\/volume\/([^/]+)\/confirm\/([a-z-]+)$/.exec(p);
    if (m === 'GET' && x) {
      const id = decodeURIComponent(x[1]!);
      const action = x[2]!;
      if (!(action in VOLUME_ACTIONS)) return send(r.res, 404, 'text/plain', 'no such action');
      if (v.role !== 'operator') return forbidden(r, `${v.user} is a viewer: only an operator may ${action}`, action);
      return sendHtml(r.res, 200, confirmPage(v, id, action, VOLUME_ACTIONS[action as VolumeAction], `/volume/${encodeURIComponent(id)}/action/${action}`));
    }
    x = /^\/volume\/([^/]+)\/action\/([a-z-]+)$/.exec(p);
    if (m === 'POST' && x) return volumeAction(r, decodeURIComponent(x[1]!), x[2]!);
    if (d.plans && (await d.plans.route(r, { audit, postRefusal, forbidden }))) return;
    if (d.guided && (await d.guided.route(r, { audit, postRefusal, forbidden }))) return;
    send(r.res, 404, 'text/plain', 'not found');
  }

  return (req, res) => {
    const host = req.headers.host;
    if (host === undefined || !hosts.has(hostName(host))) {
      sendJson(res, 403, { code: 'TM_ERR_FORBIDDEN', message: `this site answers only to ${[...hosts].join(', ')} (Host ${String(host).slice(0, 100)})` });
      return;
    }
    const url = new URL(req.url ?? '/', `https://${host}`);
    const r: Req = { req, res, url, ...viewerOf(req) };
    route(r).catch((e: unknown) => {
      d.log.warn({ path: url.pathname, code: codeOf(e), err: (e as Error).message }, 'request failed');
      if (!res.headersSent) sendJson(res, codeOf(e) === 'TM_ERR_USAGE' ? 400 : 500, { code: codeOf(e), message: (e as Error).message });
      else res.destroy();
    });
  };
}
