// The website's alerts come from the shipped Prometheus rules file: every rule in it is understood, and
// a rule fires only after its `for:` time, with its severity and its summary filled in.
import t from 'tap';
import { AlertEngine, parseRules } from '../../../config-server/alerts.js';
import { parseMetrics } from '../../../config-server/prom-text.js';

t.test('every shipped rule is read and evaluated', async (t) => {
  const e = new AlertEngine();
  t.ok(e.rules.length >= 15, `${e.rules.length} rules read`);
  t.same(e.unsupported, [], 'no rule is in a form the evaluator does not know');
  const rpo = e.rules.find((r) => r.alert === 'TidemarkRpoWarning')!;
  t.same({ expr: rpo.expr, forMs: rpo.forMs, severity: rpo.severity }, { expr: 'tidemark_rpo_seconds{hop="mt"} > 900', forMs: 300_000, severity: 'warning' });
});

t.test('for:, labels, ratios, increase, and, up', async (t) => {
  const e = new AlertEngine();
  const metrics = (rpo: number, losses: number, ret: number): ReturnType<typeof parseMetrics> => parseMetrics([
    '# TYPE tidemark_rpo_seconds gauge',
    `tidemark_rpo_seconds{volume="vol1",hop="mt"} ${rpo}`,
    `tidemark_rpo_seconds{volume="vol1",hop="agent"} 5000`,
    `tidemark_tracking_losses_total{volume="vol1"} ${losses}`,
    `tidemark_retention_bytes{volume="vol1"} ${ret}`,
    'tidemark_retention_max_bytes{volume="vol1"} 1000',
    'tidemark_resync_active{volume="vol2"} 1',
    'tidemark_resync_progress_ratio{volume="vol2"} 0.5',
  ].join('\n')).map((s) => ({ ...s, labels: { ...s.labels, instance: 'mt-1' } }));
  const t0 = 1_000_000_000;
  let fired = e.update(metrics(1000, 0, 500), [{ name: 'ps-1', cause: 'connection refused' }], t0);
  t.same(fired.map((a) => a.name), [], 'nothing fires before its for: time');
  fired = e.update(metrics(1000, 5, 950), [{ name: 'ps-1', cause: 'connection refused' }], t0 + 120_000);
  t.same(fired.map((a) => a.name).sort(), ['TidemarkDaemonDown', 'TidemarkResyncLooping'], 'daemon down after 2 m; tracking lost 5 times in the hour');
  t.match(fired.find((a) => a.name === 'TidemarkResyncLooping')!.summary, 'Volume vol1: tracking lost 5 times in an hour');
  fired = e.update(metrics(2000, 5, 950), [], t0 + 300_000);
  t.same(fired.map((a) => a.name).sort(), ['TidemarkResyncLooping', 'TidemarkResyncStuck', 'TidemarkRpoWarning'], 'RPO over 15 min for 5 min (hop=mt only); the daemon is back; vol2\'s resync has not moved (as Prometheus: no change within the range)');
  t.match(fired.find((a) => a.name === 'TidemarkRpoWarning')!.summary, /vol1: newest recovery point on the replica is 33m old/);
  fired = e.update(metrics(2000, 5, 950), [], t0 + 300_000 + 900_000);
  t.same(fired.map((a) => a.name).sort(), ['TidemarkResyncLooping', 'TidemarkResyncStuck', 'TidemarkRetentionNearCap', 'TidemarkRpoCritical', 'TidemarkRpoWarning'], 'retention over 90% for 15 min; RPO over 30 min');
  fired = e.update(metrics(10, 5, 10), [], t0 + 30 * 60_000 + 3_600_000);
  t.same(fired.map((a) => a.name).sort(), ['TidemarkResyncStuck'], 'the resync still has not moved (and); the losses are older than an hour; RPO and retention fine again');
});

t.test('a rule in a form not understood is listed, not guessed', async (t) => {
  const e = new AlertEngine('  - alert: Odd\n    expr: sum by (volume) (rate(x[5m])) > 1\n');
  t.equal(parseRules('  - alert: Odd\n    expr: x > 1\n    for: 2m\n').at(0)?.forMs, 120_000);
  t.same(e.unsupported, ['Odd']);
});
