// Server-rendered pages of the website. No secrets in pages: only the session's CSRF token, in forms.
import type { AuditEntry, PlanRunRecord, PointSeen } from './store.js';
import { machineGroups, type DaemonRow, type MachineRow, type VolumeRow } from './fleet.js';
import { fmtAge, fmtBytes, fmtTime, html, type Html } from './html.js';

export interface Viewer { user: string; role: 'viewer' | 'operator'; csrf: string }

export interface Alert { name: string; severity: string; target: string; summary: string }

export function layout(title: string, v: Viewer | null, body: Html): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title} · Tidemark</title>
<meta name="viewport" content="width=device-width"><link rel="stylesheet" href="/assets/style.css">
<script src="/assets/app.js" defer></script></head>
<body><header><strong>Tidemark</strong>${v ? html`<a href="/">Fleet</a><a href="/plans">Plans</a><a href="/guided">Failover</a><a href="/audit">Audit log</a>
<span id="who">${v.user} (${v.role})</span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="${v.csrf}"><button>Log out</button></form>` : ''}</header>
<main>${body}</main></body></html>`.text;
}

export function loginPage(error: string | null): string {
  return layout('Log in', null, html`<h1>Log in</h1>${error ? html`<p class="err" id="login-error">${error}</p>` : ''}
<form method="post" action="/login"><p><label>User <input name="user" autocomplete="username" required></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button id="login">Log in</button></p></form>`);
}

const pt = (p: VolumeRow['lastCrashPoint']): string => (p ? `#${p.seq}${p.tags.length ? ` ${p.tags.join(',')}` : ''}` : '-');

function volumeCells(r: VolumeRow): Html {
  return html`<td data-k="mode" data-v="${r.mode}">${r.mode}</td>
<td data-k="rpo" data-v="${r.rpoMs ?? ''}">${fmtAge(r.rpoMs)}</td>
<td data-k="agentBacklog" data-v="${r.agentBacklog ?? ''}">${fmtBytes(r.agentBacklog)}</td>
<td data-k="psBacklog" data-v="${r.psBacklog ?? ''}">${fmtBytes(r.psBacklog)}</td>
<td data-k="mtBacklog" data-v="${r.mtBacklog ?? ''}">${fmtBytes(r.mtBacklog)}</td>
<td data-k="appliedSeq" data-v="${r.appliedSeq ?? ''}">${r.appliedSeq ?? '-'}</td>
<td data-k="appliedBytes" data-v="${r.appliedBytes ?? ''}">${fmtBytes(r.appliedBytes)}</td>
<td data-k="crash" data-v="${r.lastCrashPoint?.atMs ?? ''}">${pt(r.lastCrashPoint)}</td>
<td data-k="app" data-v="${r.lastAppPoint?.atMs ?? ''}">${pt(r.lastAppPoint)}</td>
<td data-k="health" class="health" data-v="${r.ok ? 'ok' : r.health}">${r.health}</td>`;
}

const VOLUME_HEAD = html`<th>Mode</th><th>RPO</th><th>Agent backlog</th><th>PS backlog</th><th>MT backlog</th><th>Applied seq</th><th>Applied</th><th>Crash point</th><th>App point</th><th>Health</th>`;

export function alertList(alerts: readonly Alert[]): Html {
  if (alerts.length === 0) return html`<p id="alerts" data-count="0" class="ok">No alerts.</p>`;
  return html`<div id="alerts" data-count="${alerts.length}">${alerts.map((a) => html`<div class="alert" data-alert="${a.name}"><strong>${a.name}</strong> (${a.severity}) ${a.target}: ${a.summary}</div>`)}</div>`;
}

const VOLUME_COLS = html`<colgroup><col class="c-id">${Array.from({ length: 10 }, (_, i) => html`<col class="c${i}">`)}</colgroup>`;

function machineSummary(m: MachineRow): Html {
  return html`<span data-k="volumes" data-v="${m.volumes}">${m.volumes} volume${m.volumes === 1 ? '' : 's'}</span>
<span data-k="worstRpo" data-v="${m.worstRpoMs ?? ''}">worst RPO ${fmtAge(m.worstRpoMs)}</span>
<span data-k="backlog" data-v="${m.backlog}">backlog ${fmtBytes(m.backlog)}</span>
<span data-k="health" data-v="${m.notOk === 0 ? 'ok' : m.notOk}" class="${m.notOk === 0 ? 'ok' : 'down'}">${m.notOk === 0 ? 'all ok' : `${m.notOk} not ok`}</span>`;
}

/**
 * How many volumes the fleet page draws on the server: the machines in view when it opens, and every
 * machine with trouble. The other machines' sections come with their summary, and the page's script
 * fills their volumes in from /api/fleet as they near the screen, so a fleet of thousands of volumes is
 * interactive as soon as the first screenful is.
 */
export const EAGER_VOLUMES = 200;

/**
 * The fleet, one section per protected machine (agent) with its volumes: the page's bulk, the same for
 * every viewer of a round (web.ts keeps it per round). Machines with trouble come first. Each section is
 * laid out only when it nears the screen (content-visibility).
 */
export function fleetTable(rows: readonly VolumeRow[], round: number, intervalMs: number, eager = EAGER_VOLUMES): Html {
  const groups = machineGroups(rows);
  let drawn = 0;
  return html`<div id="fleet" data-round="${round}" data-interval="${intervalMs}" data-machines="${groups.length}">
<table class="vols head">${VOLUME_COLS}<tr><th>Volume</th>${VOLUME_HEAD}</tr></table>
${groups.map(({ machine: m, volumes }) => {
    const now = m.notOk > 0 || drawn < eager;
    if (now) drawn += volumes.length;
    return html`<section class="machine${m.notOk ? ' bad' : ''}" id="machine-${m.name}" data-machine="${m.name}"><h3><span class="name">${m.name}</span> ${machineSummary(m)}</h3>
<table class="vols"${now ? '' : html` data-lazy="1"`}>${VOLUME_COLS}${now ? volumes.map((r) => html`<tr id="vol-${r.id}" class="${r.ok ? '' : 'bad'}"><td><a href="/volume/${encodeURIComponent(r.id)}">${r.id}</a></td>${volumeCells(r)}</tr>`) : ''}</table></section>`;
  })}
</div>`;
}

export function fleetPage(v: Viewer, daemons: readonly DaemonRow[], table: Html, alerts: readonly Alert[]): string {
  return layout('Fleet', v, html`<h1>Fleet</h1>
<h2>Alerts</h2>${alertList(alerts)}
<h2>Daemons</h2>
<table id="daemons"><tr><th>Daemon</th><th>Role</th><th>State</th><th>Since</th><th>Cause</th></tr>
${daemons.map((d) => html`<tr id="daemon-${d.name}"><td>${d.name}</td><td>${d.role}</td><td data-k="state" data-v="${d.up ? 'up' : 'down'}" class="${d.up ? 'ok' : 'down'}">${d.up ? 'up' : 'DOWN'}</td><td>${fmtTime(d.sinceMs)}</td><td data-k="cause">${d.cause ?? ''}</td></tr>`)}
</table>
<h2>Protected machines and their volumes</h2>
${table}`);
}

export const VOLUME_ACTIONS = {
  'test-failover-start': 'Start a test failover (a writable copy of the latest point; replication goes on)',
  'test-failover-cleanup': 'Clean up the test failover',
  recover: 'Recover the latest point to a file',
  resync: 'Resync (only differing blocks travel)',
  drain: 'Drain (stop protecting after a final point)',
  resume: 'Resume protection after a drain (with a resync)',
} as const;
export type VolumeAction = keyof typeof VOLUME_ACTIONS;

export function volumePage(v: Viewer, r: VolumeRow, points: readonly PointSeen[], audit: readonly AuditEntry[], testFailovers: unknown[] | null, range: string): string {
  const acts = v.role === 'operator'
    ? html`<h2>Actions</h2><ul id="actions">${Object.entries(VOLUME_ACTIONS).map(([k, what]) => html`<li><a href="/volume/${encodeURIComponent(r.id)}/confirm/${k}" data-action="${k}">${what}</a></li>`)}</ul>`
    : html`<p id="actions-none">Your role (viewer) may look, not act.</p>`;
  return layout(`Volume ${r.id}`, v, html`<h1>Volume ${r.id}</h1>
<p>Agent ${r.agent ?? '-'} → process server ${r.processServer ?? '-'} → master target ${r.masterTarget ?? '-'}${r.resyncPercent !== null ? html`; resync ${r.resyncPercent}%` : ''}</p>
<table id="volume"><tr>${VOLUME_HEAD}</tr><tr id="vol-${r.id}" class="${r.ok ? '' : 'bad'}">${volumeCells(r)}</tr></table>
<h2>History</h2>
<p>${['hour', 'day', 'week'].map((x) => html`<button type="button" data-range-pick="${x}">Last ${x}</button> `)}</p>
<div class="charts" data-volume="${r.id}" data-range="${range}">
${[['rpo', 'RPO'], ['throughput', 'Applied per second'], ['agentBacklog', 'Agent backlog'], ['psBacklog', 'Process server backlog'], ['mtBacklog', 'Master target backlog']].map(([k, t]) => html`<div class="chart"><h3>${t}</h3><div data-series="${k}"></div></div>`)}
</div>
<h2>Test failovers</h2>
${testFailovers === null ? html`<p>(the master target's operator channel is not configured here)</p>` : testFailovers.length === 0 ? html`<p id="test-failovers" data-count="0">None running.</p>` : html`<pre id="test-failovers" data-count="${testFailovers.length}">${JSON.stringify(testFailovers, null, 2)}</pre>`}
${acts}
<h2>Recovery points seen</h2>
<table id="points"><tr><th>Seq</th><th>Captured</th><th>Class</th><th>Tags</th></tr>
${points.map((p) => html`<tr><td>#${p.seq}</td><td>${fmtTime(p.atMs)}</td><td>${p.consistency.toLowerCase()}</td><td>${p.tags.join(', ')}</td></tr>`)}</table>
<h2>Audit</h2>${auditTable(audit)}`);
}

export function auditTable(rows: readonly AuditEntry[]): Html {
  return html`<table class="audit"><tr><th>#</th><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Result</th><th>Detail</th></tr>
${rows.map((a) => html`<tr data-audit="${a.action}" data-result="${a.result}"><td>${a.id}</td><td>${fmtTime(a.atMs)}</td><td>${a.user}</td><td>${a.action}</td><td>${a.target}</td><td>${a.result}</td><td>${a.detail.slice(0, 300)}</td></tr>`)}</table>`;
}

export function auditPage(v: Viewer, rows: readonly AuditEntry[]): string {
  return layout('Audit log', v, html`<h1>Audit log</h1>${auditTable(rows)}`);
}

export function confirmPage(v: Viewer, target: string, action: string, what: string, postTo: string): string {
  return layout('Confirm', v, html`<h1>Confirm</h1><p id="confirm-what">${what} — <strong>${target}</strong>?</p>
<form method="post" action="${postTo}"><input type="hidden" name="csrf" value="${v.csrf}"><input type="hidden" name="confirm" value="${action}">
<button id="confirm">Yes, ${action}</button> <a href="/">Cancel</a></form>`);
}

export function resultPage(v: Viewer, title: string, ok: boolean, detail: string, back: string): string {
  return layout(title, v, html`<h1>${title}</h1><p id="result" data-ok="${ok ? '1' : '0'}" class="${ok ? 'ok' : 'err'}">${ok ? 'Done' : 'Failed'}</p><pre id="detail">${detail}</pre><p><a href="${back}" id="back">Back</a></p>`);
}

export function plansPage(v: Viewer, plans: readonly { name: string; groups: number }[], runs: readonly PlanRunRecord[]): string {
  return layout('Recovery plans', v, html`<h1>Recovery plans</h1>
<table id="plans"><tr><th>Plan</th><th>Groups</th><th></th></tr>
${plans.map((p) => html`<tr><td>${p.name}</td><td>${p.groups}</td><td>${v.role === 'operator' ? html`<a href="/plans/${p.name}/confirm?test=1" data-plan-test="${p.name}">Run as test</a> · <a href="/plans/${p.name}/confirm?test=0" data-plan-run="${p.name}">Run failover</a>` : ''}</td></tr>`)}</table>
<h2>Runs</h2>
<table id="runs"><tr><th>#</th><th>Plan</th><th>Test</th><th>By</th><th>Started</th><th>State</th></tr>
${runs.map((r) => html`<tr><td><a href="/runs/${r.id}">${r.id}</a></td><td>${r.plan}</td><td>${r.test ? 'test' : 'FAILOVER'}</td><td>${r.user}</td><td>${fmtTime(r.startedMs)}</td><td>${r.state}</td></tr>`)}</table>`);
}

export function runPage(v: Viewer, r: PlanRunRecord, steps: ReadonlyArray<{ group: string; phase: string; name: string; state: string; detail: string }>, report: string): string {
  const live = r.state === 'running' || r.state === 'waiting-approval';
  return layout(`Plan run ${r.id}`, v, html`<h1>Recovery plan ${r.plan}: run #${r.id} (${r.test ? 'test' : 'FAILOVER'})</h1>
<p id="run-state" data-state="${r.state}" data-live="${live ? '1' : '0'}">${r.state}</p>
${r.state === 'waiting-approval' && v.role === 'operator' ? html`<form method="post" action="/runs/${r.id}/approve"><input type="hidden" name="csrf" value="${v.csrf}"><input type="hidden" name="confirm" value="approve"><button id="approve">Approve and continue</button></form>` : ''}
<table id="steps"><tr><th>Group</th><th>Phase</th><th>Step</th><th>State</th><th>Detail</th></tr>
${steps.map((s, i) => html`<tr data-step="${i}" data-state="${s.state}"><td>${s.group}</td><td>${s.phase}</td><td>${s.name}</td><td>${s.state}</td><td>${s.detail.slice(-500)}</td></tr>`)}</table>
${!live && r.test && r.state !== 'failed' && v.role === 'operator' ? html`<form method="post" action="/runs/${r.id}/cleanup"><input type="hidden" name="csrf" value="${v.csrf}"><input type="hidden" name="confirm" value="cleanup"><button id="cleanup">Clean up the test failovers</button></form>` : ''}
<h2>Report</h2><pre id="report">${report}</pre>`);
}
