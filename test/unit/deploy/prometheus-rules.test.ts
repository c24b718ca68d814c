// The shipped alerting rules and dashboard: promtool accepts the rules and their unit tests pass (each
// alert fires on the series meant to raise it), and every metric they name is one a daemon exports.
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const RULES = path.join(ROOT, 'deploy/prometheus/tidemark-rules.yml');
const RULE_TESTS = path.join(ROOT, 'deploy/prometheus/tidemark-rules.test.yml');
const DASHBOARD = path.join(ROOT, 'deploy/grafana/tidemark-dashboard.json');

/** Metric names the daemons register (m.gauge / m.counter calls in their metrics modules). */
function exportedMetrics(): Set<string> {
  const names = new Set<string>();
  for (const dir of ['agent', 'process-server', 'master-target', 'common']) {
    for (const f of readdirSync(path.join(ROOT, dir)).filter((n) => n.endsWith('.ts'))) {
      for (const m of readFileSync(path.join(ROOT, dir, f), 'utf8').matchAll(/\.(?:gauge|counter)\('(tidemark_[a-z_]+)'/g)) names.add(m[1]!);
    }
  }
  return names;
}

const referenced = (text: string): string[] => [...new Set(text.match(/tidemark_[a-z_]+/g) ?? [])];

t.test('promtool checks the rules and runs their unit tests', async (t) => {
  const promtool = await run('promtool', ['--version']).then(() => true, () => false);
  if (!promtool) return t.fail("promtool not found: install Debian's prometheus package (.ci/run does)");
  const check = await run('promtool', ['check', 'rules', RULES]);
  t.match(check.stdout, /SUCCESS: \d+ rules found/, 'promtool check rules');
  const tests = await run('promtool', ['test', 'rules', RULE_TESTS], { cwd: path.dirname(RULE_TESTS) }).then((r) => r.stdout, (e: { stdout: string; stderr: string }) => `${e.stdout}\n${e.stderr}`);
  t.match(tests, /SUCCESS/, 'promtool test rules: every alert fires as its test expects', { output: tests });
});

t.test('every metric the rules and the dashboard name is exported by a daemon', async (t) => {
  const exported = exportedMetrics();
  t.ok(exported.size > 40, `${exported.size} metrics found in the daemons' code`);
  const rules = readFileSync(RULES, 'utf8');
  for (const name of referenced(rules)) t.ok(exported.has(name), `rules: ${name} is exported`);
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
  t.ok(dashboard.panels.length >= 6, 'the dashboard has panels');
  for (const p of dashboard.panels) {
    t.ok(p.targets.length > 0, `panel "${p.title}" has a query`);
    for (const q of p.targets) for (const name of referenced(q.expr)) t.ok(exported.has(name), `dashboard "${p.title}": ${name} is exported`);
  }
  // The dashboard shows what the issue asks of it: RPO, throughput and backlog per volume.
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((q) => q.expr)).join('\n');
  for (const m of ['tidemark_rpo_seconds', 'tidemark_applied_bytes_total', 'tidemark_backlog_bytes']) t.match(exprs, m, `the dashboard charts ${m}`);
});
