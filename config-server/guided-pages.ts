// The guided failover's pages (guided-routes.ts): server-drawn, every value escaped (html.ts).
import { fmtTime, html } from './html.js';
import { layout, type Viewer } from './pages.js';
import { STEP_TEXT, VERIFIED, type GuidedSequence, type GuidedStep } from './guided.js';
import type { DaemonEntry } from './config.js';
import type { ReverseNames } from '../master-target/failover/reverse-plan.js';

const TITLE: Record<string, string> = {
  drain: '1. Drain the source', failover: '2. Fail over', reverse: '3. Reverse replication', failback: '4. Fail back', resume: '5. Resume forward protection', 'stop-reverse': '6. Stop the reverse daemons',
};

export function guidedListPage(v: Viewer, volumes: ReadonlyArray<{ id: string; busy: boolean }>, seqs: readonly GuidedSequence[]): string {
  return layout('Failover', v, html`<h1>Guided failover, reverse and failback</h1>
<p>Each step is confirmed, sent to the daemons through their authenticated operator channel, and written to the audit log. Where a step needs a person on a host, the page shows what to run and waits until the collected status shows it done.</p>
<table id="guided-volumes"><tr><th>Volume</th><th></th></tr>
${volumes.map((x) => html`<tr><td>${x.id}</td><td>${x.busy ? 'in a sequence' : v.role === 'operator' ? html`<a href="/guided/start/${encodeURIComponent(x.id)}/planned" data-start-planned="${x.id}">Planned failover</a> · <a href="/guided/start/${encodeURIComponent(x.id)}/unplanned" data-start-unplanned="${x.id}">Unplanned failover</a>` : ''}</td></tr>`)}</table>
<h2>Sequences</h2>
<table id="sequences"><tr><th>#</th><th>Volume</th><th>Kind</th><th>By</th><th>Started</th><th>State</th></tr>
${seqs.map((g) => html`<tr><td><a href="/guided/${g.id}" data-sequence="${g.id}">${g.id}</a></td><td>${g.volume}</td><td>${g.kind}</td><td>${g.user}</td><td>${fmtTime(g.startedMs)}</td><td>${g.state}</td></tr>`)}</table>`);
}

export function guidedPage(v: Viewer, g: GuidedSequence, next: GuidedStep | null, waiting: string | null, cmds: { reverse: string[]; register: Array<Record<string, unknown>>; stop: string[] }, rev: { names: ReverseNames; entries: Partial<Record<keyof ReverseNames, DaemonEntry>> }): string {
  const running = g.steps.some((s) => s.state === 'running');
  const op = v.role === 'operator';
  const unwatched = (['agent', 'ps', 'mt'] as const).some((k) => !rev.entries[k]);
  const howTo = (s: GuidedStep) => {
    if (s.id === 'reverse' && next?.id === 'reverse') {
      return html`<div id="howto-reverse"><p>On the master target's host (${g.masterTarget}), write the reverse configs and start the reverse daemons:</p><pre id="reverse-commands">${cmds.reverse.join('\n')}</pre>
${unwatched ? html`<p>Then add them to this server's <code>daemons</code> and restart it, so it can see them:</p><pre id="reverse-register">${JSON.stringify(cmds.register, null, 2)}</pre>` : ''}</div>`;
    }
    if (s.id === 'stop-reverse' && next?.id === 'stop-reverse') return html`<pre id="stop-commands">${cmds.stop.join('\n')}</pre>`;
    if (s.id === 'failback' && next?.id === 'failback') return html`<p>Stop the application on ${g.out} first.</p>`;
    if (s.id === 'drain' && next?.id === 'drain') return html`<p>Stop the application on ${g.agent}'s volume ${g.volume} first.</p>`;
    return '';
  };
  return layout(`Sequence ${g.id}`, v, html`<h1>Guided ${g.kind} failover of ${g.volume}: #${g.id}</h1>
<p id="guided-state" data-state="${g.state}" data-running="${running ? '1' : '0'}" data-live="${running || (g.state === 'active' && waiting) ? '1' : '0'}" data-next="${next?.id ?? ''}">${g.state}${next ? html` — next: ${TITLE[next.id]}` : ''}</p>
<p>From ${g.agent} to ${g.masterTarget}; the failed-over volume: <code id="failed-over">${g.out}</code>. Reverse daemons: ${rev.names.agent}, ${rev.names.ps}, ${rev.names.mt}.</p>
${waiting ? html`<p id="waiting" class="err">Waiting: ${waiting}</p>` : ''}
<table id="steps"><tr><th>Step</th><th>What</th><th>State</th><th>Detail</th><th>By</th><th>When</th></tr>
${g.steps.map((s) => html`<tr data-step="${s.id}" data-state="${s.state}"><td>${TITLE[s.id]}</td><td>${STEP_TEXT[s.id]}${howTo(s)}</td><td>${s.state}</td><td class="detail">${s.detail.slice(-800)}</td><td>${s.by ?? ''}</td><td>${s.atMs ? fmtTime(s.atMs) : ''}</td></tr>`)}</table>
${op && next && !running ? html`<p><a href="/guided/${g.id}/confirm/${next.id}" id="next" data-step="${next.id}">${VERIFIED.has(next.id) ? 'Check and continue' : next.state === 'failed' ? 'Retry' : 'Run'}: ${TITLE[next.id]}</a></p>` : ''}
${op && g.state === 'active' && !running ? html`<form method="post" action="/guided/${g.id}/abort"><input type="hidden" name="csrf" value="${v.csrf}"><input type="hidden" name="confirm" value="abort"><button id="abort">Abandon the sequence</button></form>` : ''}
<p><a href="/guided">All sequences</a> · <a href="/volume/${encodeURIComponent(g.volume)}">Volume ${g.volume}</a></p>`);
}
