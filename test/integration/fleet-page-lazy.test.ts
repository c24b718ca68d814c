// The fleet page of a large fleet in a real browser (playwright-core, Debian's Chromium): the server draws
// the first machines' volumes and every machine with trouble; the others' volumes are filled in by the
// page's script as they come near the screen, with the same values /api/fleet gives. The page and its
// script are the website's own (pages.ts, assets.ts), served with the fleet as JSON.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { SCRIPT, STYLE } from '../../config-server/assets.js';
import { machineGroups, type VolumeRow } from '../../config-server/fleet.js';
import { EAGER_VOLUMES, fleetPage, fleetTable } from '../../config-server/pages.js';
import { launchChromium } from './config-server-lab.js';

t.test('lazy machine sections are filled as they near the screen', async (t) => {
  const now = Date.now();
  const rows: VolumeRow[] = [];
  for (let a = 0; a < 60; a++) for (let v = 0; v < 20; v++) {
    const bad = a === 42 && v === 3;
    rows.push({ id: `a${a}-v${v}`, agent: `agent-${String(a).padStart(2, '0')}`, processServer: 'ps-1', masterTarget: 'mt-1', mode: 'data', rpoMs: 1000 + a * 20 + v, agentBacklog: a * 1024, psBacklog: 0, mtBacklog: 0, lastSeq: 100 + v, appliedSeq: 90 + v, appliedBytes: 1_000_000 + a,
      lastCrashPoint: { seq: 90 + v, atMs: now - 1000, tags: [], consistency: 'CRASH' }, lastAppPoint: { seq: 60, atMs: now - 5000, tags: ['hourly'], consistency: 'APP' }, resyncPercent: null, health: bad ? 'process-server ps-1 DOWN: gone' : 'ok', ok: !bad });
  }
  const api = JSON.stringify({ round: 1, intervalMs: 60_000, daemons: [], machines: machineGroups(rows).map((g) => g.machine), volumes: rows, alerts: [] });
  const page = fleetPage({ user: 'u', role: 'viewer', csrf: 'x' }, [], fleetTable(rows, 1, 60_000), []);
  const srv = http.createServer((q, s) => {
    if (q.url === '/assets/style.css') return void s.writeHead(200, { 'content-type': 'text/css' }).end(STYLE);
    if (q.url === '/assets/app.js') return void s.writeHead(200, { 'content-type': 'text/javascript' }).end(SCRIPT);
    if (q.url === '/api/fleet') return void s.writeHead(200, { 'content-type': 'application/json' }).end(api);
    s.writeHead(200, { 'content-type': 'text/html' }).end(page);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const browser = await launchChromium(t);
  const p = await (await browser.newContext()).newPage();
  await p.goto(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/`);
  await p.waitForFunction(() => document.body.dataset.ready === '1');
  const drawn = await p.locator('#fleet tr[id^="vol-"]').count();
  t.ok(drawn >= EAGER_VOLUMES && drawn < rows.length, `the server drew ${drawn} of ${rows.length} volumes`);
  t.equal(await p.locator('section.machine').count(), 60, 'every machine has its section');
  t.equal(await p.getAttribute('section.machine >> nth=0', 'data-machine'), 'agent-42', 'the machine with trouble comes first');
  t.equal(await p.getAttribute('#vol-a42-v3 [data-k="health"]', 'data-v'), 'process-server ps-1 DOWN: gone', 'its volumes are drawn, with the cause');
  t.equal(await p.locator('#machine-agent-59 tr[id^="vol-"]').count(), 0, 'the last machine\'s volumes are not drawn yet');
  await p.locator('#machine-agent-59').scrollIntoViewIfNeeded();
  await p.waitForSelector('#vol-a59-v19');
  t.equal(await p.locator('#machine-agent-59 tr[id^="vol-"]').count(), 20, 'scrolled to, it has its 20 volumes');
  const r = rows.find((x) => x.id === 'a59-v19')!;
  t.equal(await p.getAttribute('#vol-a59-v19 [data-k="appliedSeq"]', 'data-v'), String(r.appliedSeq), 'with the values of /api/fleet');
  t.equal(await p.textContent('#vol-a59-v19 [data-k="app"]'), '#60 hourly', 'points as the server draws them');
  t.equal(await p.getAttribute('#vol-a59-v19 [data-k="rpo"]', 'data-v'), String(r.rpoMs));
});
