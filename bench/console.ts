// `npm run bench -- console`: the configuration server over a simulated fleet (100 agents × 20 volumes
// by default: bench/console-fleet-sim.ts, its own process): collection CPU per round (the server is a
// child process; its CPU is read from /proc), the fleet page's time to first render and to interactive in
// headless Chromium, and history bytes per volume per day in the SQLite store. References measured in
// the same run: a bare fetch + JSON.parse of every /status (what any collector must do), and the same
// fleet page served as a static file.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, promises as fsp } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Page } from 'playwright-core';
import { TIDEMARK_BIN } from '../lab/lab.js';
import { initCa, issue } from '../common/pki.js';
import { hashPassword } from '../config-server/auth.js';
import { WEB_PORT_FILE } from '../config-server/server.js';
import { SqliteStore } from '../config-server/sqlite-store.js';
import type { VolumeSample } from '../config-server/store.js';
import type { Benchmark, BenchResult, Figure } from './harness.js';
import { WORK_DIR } from './harness.js';

const AGENTS = Number(process.env.TIDEMARK_BENCH_AGENTS ?? 100);
const VOLUMES = Number(process.env.TIDEMARK_BENCH_VOLUMES ?? 20);
const ROUND_MS = 2000;
const MEASURE_ROUNDS = 10;
const PAGE_LOADS = 5;
const CHROMIUM = process.env.TIDEMARK_CHROMIUM ?? '/usr/bin/chromium';
const here = path.dirname(fileURLToPath(import.meta.url));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** utime + stime of a process, in ms. */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

async function waitFile(file: string, ms: number): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const t = await fsp.readFile(file, 'utf8').catch(() => '');
    if (t) return t;
    if (Date.now() > end) throw new Error(`timed out waiting for ${file}`);
    await sleep(100);
  }
}

/** GET a daemon's /status (parsed) or /metrics (text): what any collector must do. */
function get(port: number, what: '/status' | '/metrics'): Promise<unknown> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: what }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve(what === '/status' ? JSON.parse(b) : b));
    }).on('error', reject);
  });
}

/** Paint and interactive times of one load of `url`. */
async function pageTimes(page: Page, url: string): Promise<{ fcp: number; interactive: number; ready: number; ttfb: number; received: number }> {
  const t0 = Date.now();
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => document.body.dataset.ready === '1' || !document.querySelector('script[src]'));
  const ready = Date.now() - t0;
  const t = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
    const fcp = performance.getEntriesByType('paint').find((p) => p.name === 'first-contentful-paint');
    return { fcp: fcp ? fcp.startTime : -1, interactive: nav.domContentLoadedEventEnd, ttfb: nav.responseStart, received: nav.responseEnd };
  });
  return { ...t, ready };
}

async function historyBytes(dir: string): Promise<{ perVolumeDay: number; rows: number }> {
  const store = await SqliteStore.open(path.join(dir, 'history-store'));
  const vols = 20;
  const start = Date.UTC(2026, 0, 1);
  const every = 10_000;
  const perHour = 3_600_000 / every;
  let rows = 0;
  for (let h = 0; h < 24; h++) {
    const batch: VolumeSample[] = [];
    for (let i = 0; i < perHour; i++) {
      const at = start + h * 3_600_000 + i * every;
      for (let v = 0; v < vols; v++) batch.push({ volume: `a${v % 100}-v${v}`, atMs: at, rpoMs: 1000 + ((i * 7919 + v) % 5000), agentBacklog: (i % 3) * 1_048_576, psBacklog: 262_144, mtBacklog: 0, appliedBytes: at - start, appliedSeq: h * perHour + i, mode: 'data' });
    }
    rows += batch.length;
    store.record(batch, [], []);
    store.prune(start + (h + 1) * 3_600_000);
  }
  const bytes = store.historyBytes();
  store.close();
  return { perVolumeDay: bytes / vols, rows };
}

export const consoleBench: Benchmark = {
  description: `configuration server over ${AGENTS} agents × ${VOLUMES} volumes: collection CPU, fleet page render in Chromium, history bytes`,
  async run(): Promise<BenchResult> {
    await fsp.mkdir(WORK_DIR, { recursive: true });
    const dir = await fsp.mkdtemp(path.join(WORK_DIR, 'console-'));
    const procs: ChildProcess[] = [];
    try {
      // The simulated fleet.
      const portsFile = path.join(dir, 'ports.json');
      procs.push(spawn(process.execPath, [path.join(here, 'console-fleet-sim.js'), String(AGENTS), String(VOLUMES), portsFile], { stdio: 'inherit' }));
      const ports = JSON.parse(await waitFile(portsFile, 60_000)) as Array<{ name: string; role: string; port: number }>;

      // The configuration server, a child process.
      await initCa(path.join(dir, 'pki'));
      await issue(path.join(dir, 'pki'), 'config-server', 'cs-bench');
      const password = 'bench-password';
      await fsp.writeFile(path.join(dir, 'cs.json'), JSON.stringify({
        name: 'cs-bench', stateDir: 'cs-state', listen: { host: '127.0.0.1', port: 0 }, tls: { cert: 'pki/cs-bench.crt', key: 'pki/cs-bench.key' }, intervalMs: ROUND_MS,
        users: [{ name: 'bench', role: 'viewer', passwordHash: await hashPassword(password) }],
        daemons: ports.map((p) => ({ name: p.name, role: p.role, statusUrl: `http://127.0.0.1:${p.port}` })),
      }));
      const cs = spawn(process.execPath, [TIDEMARK_BIN, 'config-server', '--config', path.join(dir, 'cs.json')], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, TIDEMARK_LOG_LEVEL: 'warn' } });
      procs.push(cs);
      const webPort = Number(await waitFile(path.join(dir, 'cs-state', WEB_PORT_FILE), 60_000));
      const base = `https://127.0.0.1:${webPort}`;

      // Chromium, logged in; wait for a full fleet on the page (first rounds done).
      const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
      try {
        const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
        await page.goto(`${base}/login`);
        await page.fill('input[name=user]', 'bench');
        await page.fill('input[name=password]', password);
        await Promise.all([page.waitForURL(`${base}/`), page.click('#login')]);
        const fleetSize = async (): Promise<{ round: number; volumes: number }> => {
          const f = (await (await page.request.get(`${base}/api/fleet`)).json()) as { round: number; volumes: unknown[] };
          return { round: f.round, volumes: f.volumes.length };
        };
        for (let f = await fleetSize(); f.volumes < AGENTS * VOLUMES || f.round < 2; f = await fleetSize()) await sleep(500);

        // Collection CPU: over MEASURE_ROUNDS rounds with nobody looking at the site.
        const r0 = (await fleetSize()).round;
        const c0 = cpuMs(cs.pid!);
        await sleep(MEASURE_ROUNDS * ROUND_MS);
        const c1 = cpuMs(cs.pid!);
        const r1 = (await fleetSize()).round;
        const perRound = (c1 - c0) / Math.max(1, r1 - r0);

        // Reference: fetch and parse every /status, nothing else, in this process.
        const refCpu: number[] = [];
        for (let i = 0; i < 5; i++) {
          const u0 = process.cpuUsage();
          await Promise.all(ports.flatMap((p) => [get(p.port, '/status'), get(p.port, '/metrics')]));
          const u = process.cpuUsage(u0);
          refCpu.push((u.user + u.system) / 1000);
        }

        // The fleet page.
        const loads: Array<{ fcp: number; interactive: number; ready: number; ttfb: number; received: number }> = [];
        for (let i = 0; i < PAGE_LOADS; i++) loads.push(await pageTimes(page, `${base}/`));
        const html = await page.content();
        const staticHtml = html.replace(/<script[^>]*><\/script>/g, '').replace(/<link[^>]*>/g, '');
        const srv = http.createServer((_q, s) => s.writeHead(200, { 'content-type': 'text/html' }).end(staticHtml));
        await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
        const refLoads: Array<{ fcp: number; interactive: number; ready: number; ttfb: number; received: number }> = [];
        for (let i = 0; i < PAGE_LOADS; i++) refLoads.push(await pageTimes(page, `http://127.0.0.1:${(srv.address() as { port: number }).port}/`));
        srv.close();

        const hist = await historyBytes(dir);
        const pct10 = (perRound / 10_000) * 100;
        const figures: Figure[] = [
          { name: 'volumes', value: AGENTS * VOLUMES, unit: 'count' },
          { name: 'collection CPU per round', value: perRound, unit: 'ms' },
          { name: 'collection CPU at a 10 s interval', value: pct10, unit: '% of a core' },
          { name: 'fleet page first contentful paint (median)', value: median(loads.map((l) => l.fcp)), unit: 'ms' },
          { name: 'fleet page DOMContentLoaded end (median)', value: median(loads.map((l) => l.interactive)), unit: 'ms' },
          { name: 'fleet page interactive incl. script (median)', value: median(loads.map((l) => l.ready)), unit: 'ms' },
          { name: 'fleet page server response start (median)', value: median(loads.map((l) => l.ttfb)), unit: 'ms' },
          { name: 'fleet page HTML received (median)', value: median(loads.map((l) => l.received)), unit: 'ms' },
          { name: 'fleet page interactive after HTML received (median)', value: median(loads.map((l) => l.ready - l.received)), unit: 'ms' },
          { name: 'fleet page HTML', value: Buffer.byteLength(html), unit: 'bytes' },
          { name: 'history bytes per volume per day', value: hist.perVolumeDay, unit: 'bytes' },
        ];
        const ref = [
          { name: 'bare fetch of every /status (parsed) and /metrics', value: median(refCpu), unit: 'ms CPU per round' },
          { name: 'static copy of the page: first contentful paint', value: median(refLoads.map((l) => l.fcp)), unit: 'ms' },
          { name: 'static copy of the page: DOMContentLoaded end', value: median(refLoads.map((l) => l.interactive)), unit: 'ms' },
          { name: 'static copy of the page: HTML received', value: median(refLoads.map((l) => l.received)), unit: 'ms' },
        ];
        const f = (n: number): string => n.toFixed(n < 10 ? 2 : 0);
        return {
          params: { agents: AGENTS, volumesPerAgent: VOLUMES, roundMs: ROUND_MS, measuredRounds: r1 - r0, pageLoads: PAGE_LOADS, chromium: CHROMIUM, cores: os.cpus().length },
          figures,
          quoted: [],
          references: [{ name: 'same-run references', description: 'what any collector and any page of this size cost here', figures: ref }],
          ratios: [
            { name: 'collection CPU / bare fetch+parse', numerator: 'collection CPU per round', denominator: ref[0]!.name, value: perRound / median(refCpu) },
          ],
          table: [
            ['measure', 'config server', 'same-run reference', 'goal'],
            ['collection CPU per round (ms)', f(perRound), `${f(median(refCpu))} (bare fetch+parse)`, ''],
            ['collection CPU at 10 s interval (% core)', f(pct10), f((median(refCpu) / 10_000) * 100), '≤ 5'],
            ['fleet page first paint (ms, median)', f(median(loads.map((l) => l.fcp))), `${f(median(refLoads.map((l) => l.fcp)))} (static copy)`, ''],
            ['fleet page DOMContentLoaded (ms, median)', f(median(loads.map((l) => l.interactive))), `${f(median(refLoads.map((l) => l.interactive)))} (static copy)`, '≤ 1000'],
            ['fleet page interactive incl. script (ms)', f(median(loads.map((l) => l.ready))), '', '≤ 1000'],
            ['  of which: server response start (ms)', f(median(loads.map((l) => l.ttfb))), '', ''],
            ['  of which: HTML received (ms)', f(median(loads.map((l) => l.received))), `${f(median(refLoads.map((l) => l.received)))} (static copy)`, ''],
            ['  browser work after HTML received (ms)', f(median(loads.map((l) => l.ready - l.received))), '', ''],
            ['fleet page HTML (KiB)', f(Buffer.byteLength(html) / 1024), '', ''],
            ['history bytes per volume per day', f(hist.perVolumeDay), '', ''],
          ],
          notes: [
            `${AGENTS} agents × ${VOLUMES} volumes = ${AGENTS * VOLUMES} volumes behind ${ports.length - AGENTS} process servers and master targets, simulated (bench/console-fleet-sim.ts) in another process; the server collected every ${ROUND_MS} ms and was measured over ${r1 - r0} rounds (CPU from /proc, so the Chromium loads are not in it).`,
            'history bytes: one simulated day at a 10 s interval for 20 volumes in the real store, pruned hourly (raw tier kept 2 h, per-minute tier grows to 2 days, per-10-minute to 8 days).',
          ],
        };
      } finally {
        await browser.close();
      }
    } finally {
      for (const p of procs) p.kill('SIGTERM');
      if (!process.env.TIDEMARK_BENCH_KEEP) await fsp.rm(dir, { recursive: true, force: true });
    }
  },
};
