// `tidemark status`: ask each daemon's loopback status endpoint and print one table a person can read.
import http from 'node:http';

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

interface PointView { seq: number; atMs: number; tags: string[] }

/** "crash #42 3s ago" / "app 'nightly' #40 1m ago": the latest recovery point of a class. */
function point(kind: string, p: PointView | null | undefined): string {
  if (!p) return '';
  const age = Math.max(0, Math.round((Date.now() - p.atMs) / 1000));
  const ago = age < 120 ? `${age}s` : age < 7200 ? `${Math.round(age / 60)}m` : `${Math.round(age / 3600)}h`;
  return `${kind}${p.tags.length ? ` '${p.tags.join(',')}'` : ''} #${p.seq} ${ago} ago`;
}

/** One line per volume per daemon. */
export function formatStatus(snapshots: Record<string, unknown>[]): string {
  const rows: string[][] = [['daemon', 'volume', 'seq', 'acked/fwd/applied', 'backlog MiB', 'notes']];
  for (const s of snapshots) {
    const vols = (s.volumes as Record<string, unknown>[] | undefined) ?? [];
    for (const v of vols) {
      if (s.role === 'agent') {
        const r = v.resync as Record<string, number | string | boolean> | undefined;
        const resync = r?.active ? `${r.mode} ${r.percent}% sent ${mib(r.bytesSent)} MiB eta ${Math.round(Number(r.etaMs) / 1000)} s (${r.reason})` : v.consistentAfterResync === false ? 'resync: finishing (step II)' : '';
        const mode = v.mode === 'bitmap' ? `BITMAP MODE (${v.modeReason}; ${typeof v.dirtyBlocks === 'number' ? `${v.dirtyBlocks} blocks dirty` : 'changes found by scan'})` : '';
        rows.push([`agent ${s.name}`, String(v.id), String(v.lastSeq), String(v.ackedSeq), mib(v.journalBytes), [`${v.tracker}/${v.capture}`, mode, resync].filter(Boolean).join(' ')]);
      } else if (s.role === 'process-server') {
        rows.push([`ps ${s.name}`, String(v.id), String(v.storedSeq), String(v.forwardedSeq), mib(v.backlogBytes), `lz4 ${mib(v.rawBytesIn)}→${mib(v.storedBytesIn)} MiB`]);
      } else {
        rows.push([`mt ${s.name}`, String(v.id), String(v.storedSeq), String(v.appliedSeq), mib(v.backlogBytes), [`lag ${((Number(v.lagMs) || 0) / 1000).toFixed(1)} s`, v.consistent === false ? 'INCONSISTENT (resync under way)' : '', point('crash', v.lastCrashPoint as PointView | null), point('app', v.lastAppPoint as PointView | null)].filter(Boolean).join(', ')]);
      }
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
