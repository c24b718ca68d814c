// The website's one script and stylesheet, served from /assets/ (the Content-Security-Policy allows no
// inline script). The script refreshes the fleet table and draws the volume charts as SVG.
export const STYLE = `
body{font:14px system-ui,sans-serif;margin:0;color:#222}
header{background:#123;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#cde}header form{margin-left:auto}
main{padding:16px}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;white-space:nowrap}
tr.bad td{background:#fee}td.health{white-space:normal}
.down{color:#b00;font-weight:bold}.ok{color:#070}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
.chart svg{width:100%;height:140px;border:1px solid #ccc;background:#fafafa}
.err{color:#b00}.alert{background:#fee;border:1px solid #b00;padding:6px;margin:4px 0}
button{padding:4px 10px}
table.vols{table-layout:fixed}table.vols td{overflow:hidden;text-overflow:ellipsis}
table.vols.head{position:sticky;top:0;background:#fff;z-index:1}
col.c-id{width:13%}col.c0{width:6%}col.c1{width:6%}col.c2,col.c3,col.c4{width:8%}col.c5{width:7%}col.c6{width:8%}col.c7{width:9%}col.c8{width:12%}
section.machine{content-visibility:auto;contain-intrinsic-size:auto 520px;margin:6px 0;border:1px solid #ddd}
section.machine h3{margin:0;padding:4px 6px;background:#eef2f6;font-size:14px;display:flex;gap:18px;font-weight:normal}
section.machine h3 .name{font-weight:bold}section.machine.bad h3{background:#fee}
`;

export const SCRIPT = `
'use strict';
const fmtBytes = (n) => n === null ? '-' : n === 0 ? '0' : n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : n < 1073741824 ? (n / 1048576).toFixed(1) + ' MiB' : (n / 1073741824).toFixed(2) + ' GiB';
const fmtAge = (ms) => { if (ms === null) return '-'; const s = Math.max(0, Math.round(ms / 1000)); return s < 120 ? s + 's' : s < 7200 ? Math.round(s / 60) + 'm' : Math.round(s / 3600) + 'h'; };
// Each row's cells by key, found once; a cell is written only when its value changed, so a refresh of
// 2000 volumes touches the DOM (and layout) only where something moved.
const cellsOf = new WeakMap();
function cells(tr) {
  let m = cellsOf.get(tr);
  if (!m) { m = new Map(); for (const td of tr.querySelectorAll('[data-k]')) m.set(td.dataset.k, td); cellsOf.set(tr, m); }
  return m;
}
function setCell(tr, key, value, text) {
  const td = cells(tr).get(key);
  if (!td) return;
  const v = value === null ? '' : String(value);
  if (td.dataset.v === v && td.textContent === text) return;
  td.dataset.v = v;
  td.textContent = text;
}
const VOLUME_KEYS = ['mode', 'rpo', 'agentBacklog', 'psBacklog', 'mtBacklog', 'appliedSeq', 'appliedBytes', 'crash', 'app', 'health'];
function updateRow(tr, v) {
  setCell(tr, 'mode', v.mode, v.mode);
  setCell(tr, 'rpo', v.rpoMs, fmtAge(v.rpoMs));
  setCell(tr, 'agentBacklog', v.agentBacklog, fmtBytes(v.agentBacklog));
  setCell(tr, 'psBacklog', v.psBacklog, fmtBytes(v.psBacklog));
  setCell(tr, 'mtBacklog', v.mtBacklog, fmtBytes(v.mtBacklog));
  setCell(tr, 'appliedSeq', v.appliedSeq, v.appliedSeq === null ? '-' : String(v.appliedSeq));
  setCell(tr, 'appliedBytes', v.appliedBytes, fmtBytes(v.appliedBytes));
  setCell(tr, 'crash', v.lastCrashPoint ? v.lastCrashPoint.atMs : null, v.lastCrashPoint ? '#' + v.lastCrashPoint.seq + (v.lastCrashPoint.tags.length ? ' ' + v.lastCrashPoint.tags.join(',') : '') : '-');
  setCell(tr, 'app', v.lastAppPoint ? v.lastAppPoint.atMs : null, v.lastAppPoint ? '#' + v.lastAppPoint.seq + (v.lastAppPoint.tags.length ? ' ' + v.lastAppPoint.tags.join(',') : '') : '-');
  setCell(tr, 'health', v.ok ? 'ok' : v.health, v.health);
  const cls = v.ok ? '' : 'bad';
  if (tr.className !== cls) tr.className = cls;
}
// The fleet as last fetched, and a machine's volumes drawn by the script (sections the server left lazy).
let lastFleet = null;
function fleetData() {
  if (!lastFleet) lastFleet = fetch('/api/fleet', { credentials: 'same-origin' }).then((r) => r.ok ? r.json() : null);
  return lastFleet;
}
async function fillMachine(section) {
  const table = section.querySelector('table[data-lazy]');
  if (!table) return;
  const f = await fleetData();
  if (!f || !table.dataset.lazy) return;
  delete table.dataset.lazy;
  const name = section.dataset.machine;
  const frag = document.createDocumentFragment();
  for (const v of f.volumes) {
    if ((v.agent === null ? '(no agent)' : v.agent) !== name) continue;
    const tr = document.createElement('tr');
    tr.id = 'vol-' + v.id;
    const td = document.createElement('td');
    const a = document.createElement('a');
    a.href = '/volume/' + encodeURIComponent(v.id);
    a.textContent = v.id;
    td.appendChild(a);
    tr.appendChild(td);
    for (const k of VOLUME_KEYS) { const c = document.createElement('td'); c.dataset.k = k; if (k === 'health') c.className = 'health'; tr.appendChild(c); }
    updateRow(tr, v);
    frag.appendChild(tr);
  }
  table.appendChild(frag);
}
async function refreshFleet(table) {
  const r = await fetch('/api/fleet', { credentials: 'same-origin' });
  if (!r.ok) return;
  const f = await r.json();
  lastFleet = Promise.resolve(f);
  for (const v of f.volumes) {
    const tr = document.getElementById('vol-' + v.id);
    // A volume drawn under another machine than it now has (its agent did not answer when the page was
    // drawn, or the volume moved): draw the page again, or it would stay under the wrong machine.
    const machine = v.agent === null ? '(no agent)' : v.agent;
    const drawnUnder = tr && tr.closest('section.machine');
    if (table.id === 'fleet' && drawnUnder && drawnUnder.dataset.machine !== machine) {
      location.reload();
      return;
    }
    if (!tr) {
      // Not drawn yet because its machine's section is still lazy: nothing to update. A volume or
      // machine the page does not know (a daemon seen for the first time): draw the page again.
      const sec = document.getElementById('machine-' + (v.agent === null ? '(no agent)' : v.agent));
      if (sec && sec.querySelector('table[data-lazy]')) continue;
      if (table.id === 'fleet') location.reload();
      return;
    }
    updateRow(tr, v);
  }
  for (const m of f.machines || []) {
    const sec = document.getElementById('machine-' + m.name);
    // The summary's cells are the heading's: the section also holds the volume rows' cells of the same keys.
    const h = sec && sec.querySelector('h3');
    if (!h) continue;
    setCell(h, 'volumes', m.volumes, m.volumes + (m.volumes === 1 ? ' volume' : ' volumes'));
    setCell(h, 'worstRpo', m.worstRpoMs, 'worst RPO ' + fmtAge(m.worstRpoMs));
    setCell(h, 'backlog', m.backlog, 'backlog ' + fmtBytes(m.backlog));
    setCell(h, 'health', m.notOk === 0 ? 'ok' : m.notOk, m.notOk === 0 ? 'all ok' : m.notOk + ' not ok');
    const cls = 'machine' + (m.notOk ? ' bad' : '');
    if (sec.className !== cls) sec.className = cls;
    const hc = cells(h).get('health');
    if (hc) hc.className = m.notOk === 0 ? 'ok' : 'down';
  }
  for (const d of f.daemons) {
    const tr = document.getElementById('daemon-' + d.name);
    if (!tr) continue;
    setCell(tr, 'state', d.up ? 'up' : 'down', d.up ? 'up' : 'DOWN');
    setCell(tr, 'cause', d.cause || '', d.cause || '');
  }
  table.dataset.round = String(f.round);
}
function drawChart(el, points, key) {
  const W = 400, H = 120;
  const xs = points.map((p) => p.t), ys = points.map((p) => p[key]).map((y) => y === null ? 0 : y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y1 = Math.max(...ys, 1);
  const pts = points.map((p, i) => ((p.t - x0) / (x1 - x0) * W).toFixed(1) + ',' + (H - ys[i] / y1 * (H - 10)).toFixed(1)).join(' ');
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', pts); line.setAttribute('fill', 'none'); line.setAttribute('stroke', '#246'); line.setAttribute('stroke-width', '1.5');
  svg.appendChild(line);
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', '4'); label.setAttribute('y', '12'); label.setAttribute('font-size', '10');
  label.textContent = 'max ' + (key === 'rpo' ? fmtAge(y1) : key === 'throughput' ? fmtBytes(y1) + '/s' : fmtBytes(y1));
  svg.appendChild(label);
  el.replaceChildren(svg);
  el.dataset.points = String(points.length);
}
async function loadCharts(box) {
  const range = box.dataset.range;
  const r = await fetch('/api/volume/' + encodeURIComponent(box.dataset.volume) + '/history?range=' + range, { credentials: 'same-origin' });
  if (!r.ok) return;
  const h = await r.json();
  for (const el of box.querySelectorAll('[data-series]')) drawChart(el, h.samples, el.dataset.series);
  box.dataset.loaded = '1';
}
document.addEventListener('DOMContentLoaded', () => {
  const fleet = document.getElementById('fleet');
  if (fleet) {
    const every = Number(fleet.dataset.interval) || 10000;
    setInterval(() => refreshFleet(fleet).catch(() => {}), Math.min(every, 5000));
    // Machines whose volumes the server left out: drawn when they come within a few screens.
    const lazy = [...fleet.querySelectorAll('section.machine')].filter((s) => s.querySelector('table[data-lazy]'));
    if (lazy.length) {
      const io = new IntersectionObserver((entries) => { for (const e of entries) if (e.isIntersecting) { io.unobserve(e.target); fillMachine(e.target).catch(() => {}); } }, { rootMargin: '2000px 0px' });
      for (const s of lazy) io.observe(s);
    }
  }
  for (const box of document.querySelectorAll('.charts')) { loadCharts(box).catch(() => {}); setInterval(() => loadCharts(box).catch(() => {}), 10000); }
  for (const b of document.querySelectorAll('[data-range-pick]')) b.addEventListener('click', () => { const box = document.querySelector('.charts'); box.dataset.range = b.dataset.rangePick; loadCharts(box); });
  const run = document.getElementById('run-state');
  if (run && run.dataset.live === '1') setTimeout(() => location.reload(), 1000);
  const guided = document.getElementById('guided-state');
  if (guided && guided.dataset.live === '1') setTimeout(() => location.reload(), 2000);
  document.body.dataset.ready = '1';
});
`;
