// Cache health and flow control from quota, usage and backlog age: the thresholds as documented, and
// backpressure that does not flap.
import t from 'tap';
import { psConfigSchema } from '../../../process-server/config.js';
import { effectiveQuota, evaluateHealth, nextFlow } from '../../../process-server/health.js';
import type { FlowState } from '../../../proto/receiver.js';

const base = { name: 'ps', cacheDir: 'c', tls: { ca: 'a', cert: 'b', key: 'c' }, masterTargets: [{ name: 'mt', port: 1 }], volumes: [{ id: 'v', agent: 'a', masterTarget: 'mt' }] };
const cfg = psConfigSchema.parse(base).cache;
const MiB = 1 << 20;

t.test('defaults: InMage thresholds', async (t) => {
  t.match(cfg, { quotaPercent: 80, warningFreePercent: 30, criticalFreePercent: 25, backlogWarningMs: 30 * 60_000, backlogCriticalMs: 45 * 60_000 });
  t.equal(cfg.quotaBytes, undefined, 'no byte cap unless configured');
});

t.test('thresholds out of order are a configuration error', async (t) => {
  t.throws(() => psConfigSchema.parse({ ...base, cache: { warningFreePercent: 20, criticalFreePercent: 25 } }), /criticalFreePercent/);
  t.throws(() => psConfigSchema.parse({ ...base, cache: { stopBelowFreePercent: 20, resumeAboveFreePercent: 20 } }), /stopBelowFreePercent/);
  t.throws(() => psConfigSchema.parse({ ...base, cache: { backlogWarningMs: 60_000, backlogCriticalMs: 30_000 } }), /backlogWarningMs/);
});

t.test('the quota is the smallest of bytes, % of the filesystem, and what the filesystem can hold', async (t) => {
  const fs = { sizeBytes: 1000 * MiB, availBytes: 600 * MiB, usedAtCheck: 0 };
  t.equal(effectiveQuota({ quotaPercent: 80 }, fs, 0).quota, 600 * MiB, 'limited by available space');
  t.equal(effectiveQuota({ quotaPercent: 50 }, fs, 0).quota, 500 * MiB, 'limited by %');
  t.equal(effectiveQuota({ quotaPercent: 50, quotaBytes: 64 * MiB }, fs, 0).quota, 64 * MiB, 'limited by bytes');
  const grown = effectiveQuota({ quotaPercent: 80 }, fs, 100 * MiB);
  t.strictSame(grown, { quota: 600 * MiB, avail: 500 * MiB }, 'our own growth since the last statfs comes out of the available space, not the quota');
});

t.test('health: free space and backlog age, worst wins, each reason named', async (t) => {
  const q = 100 * MiB;
  t.equal(evaluateHealth(cfg, q, 69 * MiB, new Map()).health, 'ok', '31% free');
  t.equal(evaluateHealth(cfg, q, 71 * MiB, new Map()).health, 'warning', '29% free');
  t.equal(evaluateHealth(cfg, q, 76 * MiB, new Map()).health, 'critical', '24% free');
  const old = evaluateHealth(cfg, q, 0, new Map([['v1', 31 * 60_000], ['v2', 10_000]]));
  t.equal(old.health, 'warning', 'a backlog 31 min old');
  t.match(old.findings.map((f) => f.text), [/volume v1: oldest differential not yet forwarded is 31 min old/]);
  const both = evaluateHealth(cfg, q, 72 * MiB, new Map([['v1', 46 * 60_000]]));
  t.equal(both.health, 'critical', 'backlog 46 min old beats 28% free');
  t.equal(both.findings.length, 2, 'both reasons listed');
});

t.test('flow: slower from 25% free, stop under 10%, resume only from 20%, full at the quota', async (t) => {
  const q = 100 * MiB;
  let f: FlowState = { paused: false, volumes: [], reason: '', delayMs: 0, full: false };
  const step = (usedMiB: number): FlowState => (f = nextFlow(cfg, f, q, usedMiB * MiB));
  t.match(step(70), { paused: false, delayMs: 0 }, '30% free: no delay');
  t.match(step(80), { paused: false }, '20% free: slower');
  t.ok(f.delayMs > 0 && f.delayMs < cfg.maxAcceptDelayMs, `delay ${f.delayMs} ms`);
  t.match(step(91), { paused: true, delayMs: cfg.maxAcceptDelayMs, full: false }, '9% free: paused');
  t.match(f.reason, /9\.0% free/);
  t.match(step(85), { paused: true }, '15% free: still paused (hysteresis)');
  t.match(step(100), { paused: true, full: true }, 'at the quota: full');
  t.match(step(79), { paused: false, full: false }, '21% free: resumed');
  t.match(step(85), { paused: false }, '15% free again: not paused until under 10%');
});

t.test('flow: only the volumes filling the cache are paused; a dead master target does not stop the others', async (t) => {
  const q = 100 * MiB;
  const idle: FlowState = { paused: false, volumes: [], reason: '', delayMs: 0, full: false };
  const stuck = nextFlow(cfg, idle, q, 92 * MiB, [{ id: 'a', bytes: 60 * MiB, draining: false }, { id: 'b', bytes: 30 * MiB, draining: false }, { id: 'c', bytes: 2 * MiB, draining: true }, { id: 'd', bytes: 0, draining: true }]);
  t.same(stuck.volumes, ['a', 'b'], 'the volumes whose master target takes nothing are paused; c and d go on');
  const slow = nextFlow(cfg, idle, q, 92 * MiB, [{ id: 'a', bytes: 70 * MiB, draining: true }, { id: 'b', bytes: 20 * MiB, draining: true }, { id: 'c', bytes: 2 * MiB, draining: true }]);
  t.same(slow.volumes, ['a'], 'all draining: those holding at least a fair share');
  t.same(nextFlow(cfg, idle, q, 50 * MiB, [{ id: 'a', bytes: 50 * MiB, draining: false }]).volumes, [], 'room enough: nobody paused');
});
