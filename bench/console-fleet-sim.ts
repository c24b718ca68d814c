// A simulated fleet for `npm run bench -- console`: agents × volumes behind process servers and master
// targets, each a loopback HTTP server answering GET /status with a snapshot shaped like the real
// daemons' (fields and sizes as agent/, process-server/ and master-target/ report them), figures moving
// with time. Run as its own process so its serving cost is not counted as the collector's.
// Usage: node console-fleet-sim.js <agents> <volumesPerAgent> <portsFile>
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const [agents, perAgent, portsFile] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]!];
const PS = Math.max(1, Math.ceil(agents / 25));
const MT = Math.max(1, Math.ceil(agents / 50));
const t0 = Date.now();
const seqAt = (now: number, k: number): number => Math.floor((now - t0) / 1000) + 100 + k;

type Vol = { id: string; agent: number; ps: number; mt: number; k: number };
const vols: Vol[] = [];
for (let a = 0; a < agents; a++) for (let v = 0; v < perAgent; v++) vols.push({ id: `a${a}-v${v}`, agent: a, ps: a % PS, mt: a % MT, k: v });

function agentSnap(a: number): unknown {
  const now = Date.now();
  return {
    role: 'agent', name: `agent-${a}`, pid: 1000 + a,
    uploader: { peer: `ps-${a % PS}`, connected: true, bytesSent: (now - t0) * 50, diffsSent: seqAt(now, 0), backpressure: false, backpressureReason: null, lastError: null, downSince: null },
    volumes: vols.filter((v) => v.agent === a).map((v) => ({
      id: v.id, path: `/dev/disk/by-id/${v.id}`, tracker: 'data', capture: 'none', mode: 'data', modeReason: null, sizeBytes: 64 << 30, blockSize: 4096,
      journalFiles: v.k % 3, journalBytes: (v.k % 3) * 1_048_576, backlogAgeMs: (v.k % 3) * 700, lastSeq: seqAt(now, v.k), lastCycleBytes: 65536, lastCycleAt: now - 500,
      dirtyBlocks: 0, consistentAfterResync: true, drained: null, resync: { active: false, mode: null, percent: 100, bytesSent: 0, etaMs: 0, reason: null },
      captureStats: { points: seqAt(now, v.k), failures: 0, lastError: null, lastPointAt: now - 1000 }, verify: { lastPassAt: now - 3_600_000, damagedBlocks: 0, passes: 3 },
    })),
  };
}

function psSnap(p: number): unknown {
  const now = Date.now();
  return {
    role: 'process-server', name: `ps-${p}`, pid: 2000 + p,
    receiver: { diffsReceived: seqAt(now, 0) * 20, bytesReceived: (now - t0) * 1000, duplicatesSkipped: 0, diffsDelayed: 0 },
    forwarders: Object.fromEntries(Array.from({ length: MT }, (_, m) => [`mt-${m}`, { connected: true, bytesSent: (now - t0) * 500, diffsSent: seqAt(now, 0) * 10, backpressure: false, lastError: null }])),
    cache: { usedBytes: 2 << 30, quotaBytes: 100 << 30, freePercent: 98, health: 'ok', reasons: [], backpressure: false, acceptDelayMs: 0 },
    throttle: { rateBytesPerSec: 0, activeRule: null, waitingVolumes: [], bytesPassed: (now - t0) * 500 },
    volumes: vols.filter((v) => v.ps === p).map((v) => ({ id: v.id, agent: `agent-${v.agent}`, masterTarget: `mt-${v.mt}`, storedSeq: seqAt(now, v.k) - 1, backlogFiles: 1, backlogBytes: 262_144, backlogAgeMs: 300, compression: { rawBytes: (now - t0) * 10, storedBytes: (now - t0) * 6, ratio: 1.66 } })),
  };
}

function mtSnap(m: number): unknown {
  const now = Date.now();
  return {
    role: 'master-target', name: `mt-${m}`, pid: 3000 + m, port: 7420,
    receiver: { diffsReceived: seqAt(now, 0) * 50, bytesReceived: (now - t0) * 2000, duplicatesSkipped: 0, diffsDelayed: 0 },
    volumes: vols.filter((v) => v.mt === m).map((v) => {
      const seq = seqAt(now, v.k) - 2;
      return {
        id: v.id, replica: `/srv/replicas/${v.id}.img`, storedSeq: seq, backlogFiles: 0, backlogBytes: 0, backlogAgeMs: 0,
        lastCrashPoint: { seq, atMs: now - 2000, consistency: 'CRASH', tags: [], appliedAt: now - 1500 },
        lastAppPoint: { seq: seq - (seq % 60), atMs: now - 2000 - (seq % 60) * 1000, consistency: 'APP', tags: ['hourly'], appliedAt: now - 1500 },
        retention: { segments: 40, bytes: 3 << 30, maxBytes: 10 << 30, points: 3600, oldestPoint: { seq: seq - 3600, atMs: now - 86_400_000 }, compactions: 12, thinnedPoints: 200, purgedSegments: 5, alert: null, paused: null, lastMaintenanceAt: now - 30_000, lastError: null },
        consistent: true, appliedSeq: seq, appliedBytes: (now - t0) * 20, lastAppliedAt: now - 1500, lagMs: 1500, lastConsistency: 'CRASH', lastError: null,
      };
    }),
  };
}

/** /metrics as the daemons render it (common/metrics.ts): a handful of series per volume. */
function metricsOf(snap: { volumes: Array<Record<string, unknown>> }, hop: string): string {
  const lines = ['# HELP tidemark_rpo_seconds Age of the newest recovery point', '# TYPE tidemark_rpo_seconds gauge'];
  for (const v of snap.volumes) {
    const l = `volume="${String(v.id)}",hop="${hop}"`;
    lines.push(`tidemark_rpo_seconds{${l}} 2.5`, `tidemark_backlog_bytes{${l}} ${Number(v.backlogBytes ?? v.journalBytes ?? 0)}`, `tidemark_backlog_age_seconds{${l}} 0.3`,
      `tidemark_replica_consistent{volume="${String(v.id)}"} 1`, `tidemark_tracker_mode{volume="${String(v.id)}",mode="data"} 1`, `tidemark_tracker_mode{volume="${String(v.id)}",mode="bitmap"} 0`,
      `tidemark_volume_drained{volume="${String(v.id)}"} 0`, `tidemark_resync_active{volume="${String(v.id)}"} 0`, `tidemark_tracking_losses_total{volume="${String(v.id)}"} 0`,
      `tidemark_diffs_total{${l}} ${Number(v.lastSeq ?? v.storedSeq ?? 0)}`);
  }
  return lines.join('\n') + '\n';
}

async function serve(snap: () => unknown, hop: string): Promise<number> {
  const s = http.createServer((req, res) => {
    if (req.url === '/status') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(snap()));
    else if (req.url === '/metrics') res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metricsOf(snap() as { volumes: Array<Record<string, unknown>> }, hop));
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as AddressInfo).port;
}

const ports: Array<{ name: string; role: string; port: number }> = [];
for (let a = 0; a < agents; a++) ports.push({ name: `agent-${a}`, role: 'agent', port: await serve(() => agentSnap(a), 'agent') });
for (let p = 0; p < PS; p++) ports.push({ name: `ps-${p}`, role: 'process-server', port: await serve(() => psSnap(p), 'ps') });
for (let m = 0; m < MT; m++) ports.push({ name: `mt-${m}`, role: 'master-target', port: await serve(() => mtSnap(m), 'mt') });
await fsp.writeFile(portsFile, JSON.stringify(ports));
