// `tidemark status`: ask each daemon's loopback status endpoint and print what a person needs at a
// glance: one line per daemon, one row per volume across the chain (agent -> process server -> master
// target), then the warnings that need someone's attention.
import http from 'node:http';
import { ruleName } from '../process-server/metrics.js';
import { age, chain, healthText, num, obj, problemsOf, vols, type Snap, type Unreachable } from './status-health.js';
import { fitTable, terminalWidth, wrap, type Column } from './status-table.js';

export { age, volumeHealth } from './status-health.js';

export async function fetchStatus(port: number, host = '127.0.0.1'): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/status', timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as Record<string, unknown>);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

const mib = (n: unknown): string => (typeof n === 'number' ? (n / 1048576).toFixed(1) : '-');

/** 0, 512 B, 1.5 KiB, 12.0 MiB, 1.20 GiB. */
export function bytes(n: unknown): string {
  const x = num(n);
  if (x === null) return '-';
  if (x === 0) return '0';
  if (x < 1024) return `${x} B`;
  if (x < 1048576) return `${(x / 1024).toFixed(1)} KiB`;
  if (x < 1073741824) return `${(x / 1048576).toFixed(1)} MiB`;
  return `${(x / 1073741824).toFixed(2)} GiB`;
}


interface PointView { seq: number; atMs: number; tags: string[] }

/** "#42 3s ago" / "'nightly' #40 1m ago": a recovery point and how old its capture instant is (RPO). */
function point(p: unknown, now: number): string {
  const v = obj(p) as PointView | null;
  if (!v || num(v.atMs) === null) return '-';
  return `${v.tags?.length ? `'${v.tags.join(',')}' ` : ''}#${v.seq} ${age(now - v.atMs)} ago`;
}

/** A hop's backlog: "0", or its size and how long its oldest differential has waited. */
function backlog(b: unknown, ageMs: unknown): string {
  const a = num(ageMs);
  return num(b) === 0 || num(b) === null ? bytes(b) : `${bytes(b)}${a !== null ? ` ${age(a)}` : ''}`;
}

function ratioOf(v: Snap | undefined): string {
  if (!v) return '-';
  const c = obj(v.compression);
  const raw = num(c?.rawBytes) ?? num(v.rawBytesIn);
  const stored = num(c?.storedBytes) ?? num(v.storedBytesIn);
  const r = raw !== null && stored ? num(c?.ratio) ?? raw / stored : null;
  // "rest": the volume's last window saved too little; extents pass raw, untried (docs/OPERATIONS.md §19).
  return r === null ? '-' : `${r.toFixed(2)}x${c?.state === 'resting' ? ' rest' : ''}`;
}

function senderText(to: string, st: Snap | null, now: number): string {
  if (!st) return `${to} ?`;
  const sent = `sent ${bytes(st.bytesSent)} in ${num(st.diffsSent) ?? 0} differentials`;
  if (st.connected === true) return `connected to ${to}${st.backpressure ? ` (BACKPRESSURE${num(st.backpressureSince) ? ` for ${age(now - (st.backpressureSince as number))}` : ''})` : ''}, ${sent}`;
  const down = num(st.downSince);
  return `NOT CONNECTED to ${to}${down ? ` for ${age(now - down)}` : ''}, ${sent}`;
}

function receiverText(r: Snap | null): string {
  return r ? `received ${bytes(r.bytesReceived)} in ${num(r.diffsReceived) ?? 0} differentials (${num(r.duplicatesSkipped) ?? 0} duplicates skipped)` : 'not receiving yet';
}

/** Cache quota and health, and the WAN throttle, when the process server reports them. */
function cacheText(s: Snap): string[] {
  const out: string[] = [];
  const c = obj(s.cache);
  if (c) {
    const free = num(c.freePercent);
    const delay = num(c.acceptDelayMs);
    out.push(`cache ${bytes(c.usedBytes)} of ${bytes(c.quotaBytes)} used (${free !== null ? `${free.toFixed(0)}% free, ` : ''}${String(c.health ?? '?')}${c.backpressure ? ', BACKPRESSURE' : delay ? `, agents slowed ${delay} ms per differential` : ''})`);
  }
  const th = obj(s.throttle);
  if (th) {
    const rate = num(th.rateBytesPerSec);
    const w = th.waitingVolumes;
    const waiting = Array.isArray(w) ? w.length : num(w) ?? 0;
    const rule = ruleName(th.activeRule);
    out.push(`throttle ${rate ? `${bytes(rate)}/s` : 'unlimited'}${rule ? ` (rule ${rule})` : ''}${waiting ? `, ${waiting} volume${waiting === 1 ? '' : 's'} waiting${Array.isArray(w) ? ` (${w.join(', ')})` : ''}` : ''}, passed ${bytes(th.bytesPassed)}`);
  }
  return out;
}

/** One line per daemon: who it talks to and what went through. */
function daemonLines(snaps: Snap[], now: number): string[] {
  return snaps.map((s) => {
    if (s.role === 'agent') {
      const u = obj(s.uploader);
      return `agent ${s.name}: ${senderText(u?.peer ? String(u.peer) : 'process server', u, now)}`;
    }
    if (s.role === 'process-server') {
      const total = vols(s).reduce<{ raw: number; stored: number }>((t, v) => ({ raw: t.raw + (num(obj(v.compression)?.rawBytes) ?? num(v.rawBytesIn) ?? 0), stored: t.stored + (num(obj(v.compression)?.storedBytes) ?? num(v.storedBytesIn) ?? 0) }), { raw: 0, stored: 0 });
      const fwd = Object.entries(obj(s.forwarders) ?? {}).map(([mt, st]) => senderText(mt, obj(st), now));
      const lz = total.stored ? [`compressed ${mib(total.raw)}→${mib(total.stored)} MiB (${(total.raw / total.stored).toFixed(2)}x)`] : [];
      return `process server ${s.name}: ${[receiverText(obj(s.receiver)), ...lz, ...fwd, ...cacheText(s)].join('; ')}`;
    }
    return `master target ${s.name}: ${receiverText(obj(s.receiver))}`;
  });
}

/** What needs someone's attention, one line each. */
function warnings(snaps: Snap[]): string[] {
  const out: string[] = [];
  for (const s of snaps) {
    if (s.role === 'agent') {
      const u = obj(s.uploader);
      if (u && u.connected !== true) out.push(`agent ${s.name}: not connected to the process server${u.lastError ? `: ${u.lastError}` : ''}`);
      if (u?.backpressure) out.push(`agent ${s.name}: held back by ${String(u.peer || 'the process server')}${u.backpressureReason ? `: ${u.backpressureReason}` : ''}`);
      for (const v of vols(s)) {
        if (v.mode === 'bitmap') out.push(`${v.id}: BITMAP MODE (${v.modeReason}; ${typeof v.dirtyBlocks === 'number' ? `${v.dirtyBlocks} blocks dirty` : 'changes found by scan'})`);
        const r = obj(v.resync);
        if (r?.active) out.push(`${v.id}: ${r.mode} ${r.percent}% sent ${mib(r.bytesSent)} MiB eta ${Math.round(Number(r.etaMs) / 1000)} s (${r.reason})`);
        else if (v.consistentAfterResync === false) out.push(`${v.id}: resync: finishing (step II)`);
        const cs = obj(v.captureStats);
        if (cs?.lastError) out.push(`${v.id}: last capture failure (${num(cs.failures) ?? '?'} so far): ${cs.lastError}`);
      }
    } else if (s.role === 'process-server') {
      for (const [mt, st] of Object.entries(obj(s.forwarders) ?? {})) {
        if (obj(st)?.connected !== true) out.push(`process server ${s.name}: not connected to ${mt}${obj(st)?.lastError ? `: ${obj(st)!.lastError}` : ''}`);
      }
      const c = obj(s.cache);
      const reasons = Array.isArray(c?.reasons) ? (c!.reasons as unknown[]).map(String) : [];
      if (c && ((typeof c.health === 'string' && c.health !== 'ok') || reasons.length > 0)) out.push(`process server ${s.name}: cache ${String(c.health ?? '')}${reasons.length ? `: ${reasons.join('; ')}` : ''}`);
      if (c?.backpressure) out.push(`process server ${s.name}: backpressure: agents are held back until the cache drains`);
    } else {
      for (const v of vols(s)) {
        if (v.consistent === false) out.push(`${v.id}: INCONSISTENT (resync under way) on ${s.name}: the replica is not a usable image`);
        if (v.lastError) out.push(`${v.id}: last apply error on ${s.name}: ${v.lastError}`);
        const rt = obj(v.retention);
        if (rt?.paused) out.push(`${v.id}: APPLY PAUSED on ${s.name}: ${rt.paused}`);
        else if (rt?.alert) out.push(`${v.id}: ${rt.alert} on ${s.name}`);
        if (rt?.lastError) out.push(`${v.id}: retention maintenance on ${s.name} failing: ${rt.lastError}`);
      }
    }
  }
  return out;
}

/** Retention on the master target: how many points, back how far, and the log's size. */
function retained(m: Snap | undefined, now: number): string {
  const r = obj(m?.retention);
  if (!r) return '-';
  const oldest = obj(r.oldestPoint);
  const back = oldest ? ` back ${age(now - Number(oldest.atMs))}` : '';
  return `${num(r.points) ?? 0} pts${back}, ${mib(r.bytes)} MiB${r.alert ? ' ALERT' : ''}`;
}

/** The table's columns; `keep`: the narrower the terminal, the more of the low ones are left out. */
const COLUMNS: Column[] = [
  { head: 'VOLUME', keep: 99 }, { head: 'AGENT', keep: 2 }, { head: 'JOURNAL', keep: 6 }, { head: 'PS CACHE', keep: 5 }, { head: 'RATIO', keep: 1 },
  { head: 'MT STAGING', keep: 4 }, { head: 'SEQ jrnl/ps/mt/applied', keep: 3 }, { head: 'LAG', keep: 9 }, { head: 'CRASH POINT', keep: 8 },
  { head: 'APP POINT', keep: 7 }, { head: 'RETAINED', keep: 4.5 }, { head: 'HEALTH', keep: 99 },
];

export interface FormatOptions {
  /** Fit the table to this many columns (default: COLUMNS, the terminal's, or whole lines). */
  width?: number;
  /** Daemons whose config was given but which did not answer: their volumes show as unreachable. */
  unreachable?: Unreachable[];
}

/** Daemon lines, then one row per volume across the chain (fitted to the width), then warnings. */
export function formatStatus(snapshots: Record<string, unknown>[], now = Date.now(), o: FormatOptions = {}): string {
  const unreachable = o.unreachable ?? [];
  const { agents, pss, mts, find, ids } = chain(snapshots, unreachable);
  const rows: string[][] = [];
  for (const id of ids) {
    const a = find(agents, id);
    const p = find(pss, id)?.v;
    const m = find(mts, id)?.v;
    const lag = num(m?.lagMs);
    rows.push([
      id,
      a ? `${a.v.tracker}/${a.v.capture} ${a.v.mode === 'bitmap' ? 'BITMAP' : String(a.v.mode ?? '?')}` : '-',
      a ? backlog(a.v.journalBytes, a.v.backlogAgeMs) : '-',
      p ? backlog(p.backlogBytes, p.backlogAgeMs) : '-',
      ratioOf(p),
      m ? backlog(m.backlogBytes, m.backlogAgeMs) : '-',
      [a?.v.lastSeq, p?.storedSeq, m?.storedSeq, m?.appliedSeq].map((x) => (num(x) === null ? '-' : String(x))).join('/'),
      lag === null ? '-' : `${(lag / 1000).toFixed(1)}s`,
      m ? point(m.lastCrashPoint, now) : '-',
      m ? point(m.lastAppPoint, now) : '-',
      retained(m, now),
      healthText(problemsOf(id, snapshots, unreachable, now)),
    ]);
  }
  const width = o.width ?? terminalWidth();
  const { text, hidden } = fitTable(COLUMNS, rows, width);
  // Free text wraps at the width too, continuation lines indented.
  const fold = (l: string, indent = ''): string => (Number.isFinite(width) ? indent + wrap(l, Math.max(20, width - indent.length - 2)).split('\n').join(`\n${indent}  `) : indent + l);
  const table = [...text.split('\n'), ...(hidden.length ? [fold(`(${hidden.length} columns left out to fit the width: ${hidden.join(', ')}; widen the terminal or use --json)`)] : [])];
  const warn = warnings(snapshots);
  const head = [...daemonLines(snapshots, now), ...unreachable.map((u) => `${u.role === 'daemon' ? '' : `${u.role} `}${u.name}: NOT REACHABLE (${u.error})`)].map((l) => fold(l));
  return [...head, ...(head.length ? [''] : []), ...table, ...(warn.length ? ['', 'warnings:', ...warn.map((w) => fold(w, '  '))] : [])].join('\n');
}
