// DaemonMetrics in-process: one registry per daemon (two in one process do not mix), errors counted per
// logger tree from the log calls, and figures that follow the snapshot (a volume gone is a series gone).
import { pino } from 'pino';
import t from 'tap';
import { agentMetrics } from '../../../agent/metrics.js';
import { loggedCodes, rootLogger } from '../../../common/log.js';
import { masterTargetMetrics } from '../../../master-target/metrics.js';
import { parsePrometheusText, sampleValue } from '../../integration/prom-text.js';

t.test('errors by code: warn and worse with a code, per logger tree, children included', async (t) => {
  const a = rootLogger('a', 'info');
  const b = rootLogger('b', 'info');
  a.child({ component: 'x' }).error({ code: 'TM_ERR_IO', err: 'EIO' }, 'apply failed');
  a.warn({ code: 'TM_ERR_IO' }, 'again');
  a.warn({ code: 'TM_ERR_CONNECTION' }, 'down');
  a.info({ code: 'TM_ERR_CONNECTION' }, 'peer disconnected'); // info: not an error
  a.error('no code'); // nothing to count it under
  b.fatal({ code: 'TM_ERR_PKI' }, 'could not start');
  t.same(Object.fromEntries(loggedCodes(a)), { TM_ERR_IO: 2, TM_ERR_CONNECTION: 1 });
  t.same(Object.fromEntries(loggedCodes(b)), { TM_ERR_PKI: 1 });
  t.same(Object.fromEntries(loggedCodes(pino({ level: 'silent' }))), {}, 'a logger not made by rootLogger counts nothing');

  const ma = masterTargetMetrics(a, () => ({ name: 'mt-a', volumes: [] }));
  const mb = masterTargetMetrics(b, () => ({ name: 'mt-b', volumes: [] }));
  const fa = parsePrometheusText(await ma.render());
  const fb = parsePrometheusText(await mb.render());
  t.equal(sampleValue(fa, 'tidemark_errors_total', { code: 'TM_ERR_IO' }), 2);
  t.equal(sampleValue(fb, 'tidemark_errors_total', { code: 'TM_ERR_IO' }), undefined, 'the other daemon in the process did not see it');
  t.equal(sampleValue(fb, 'tidemark_daemon_info', { name: 'mt-b' }), 1);
  t.ok(fa.has('process_cpu_seconds_total') && fb.has('process_cpu_seconds_total'), 'default metrics in both registries');
});

t.test('series follow the snapshot at each scrape', async (t) => {
  const log = rootLogger('agent', 'silent');
  let volumes: Record<string, unknown>[] = [
    { id: 'a', mode: 'bitmap', journalBytes: 4096, journalFiles: 1, backlogAgeMs: 1500, lastCrashPoint: { seq: 3, atMs: Date.now() - 10_000, tags: [] }, lastAppPoint: null },
    { id: 'b', mode: 'data', journalBytes: 0, journalFiles: 0, backlogAgeMs: 0, lastCrashPoint: null, lastAppPoint: null },
  ];
  let scrapes = 0;
  const m = agentMetrics(log, () => {
    scrapes++;
    return { name: 'agent-1', volumes };
  });
  const f = parsePrometheusText(await m.render());
  t.equal(scrapes, 1, 'one snapshot per scrape, however many metrics read it');
  t.equal(sampleValue(f, 'tidemark_tracker_mode', { volume: 'a', mode: 'bitmap' }), 1);
  t.equal(sampleValue(f, 'tidemark_tracker_mode', { volume: 'a', mode: 'data' }), 0);
  t.equal(sampleValue(f, 'tidemark_backlog_age_seconds', { volume: 'a' }), 1.5);
  const rpo = sampleValue(f, 'tidemark_rpo_seconds', { volume: 'a' })!;
  t.ok(rpo >= 10 && rpo < 60, `RPO from the crash point's capture instant (${rpo} s)`);
  t.equal(sampleValue(f, 'tidemark_rpo_seconds', { volume: 'b' }), Infinity, 'no point: +Inf');
  t.equal(sampleValue(f, 'tidemark_dirty_blocks', { volume: 'a' }), undefined, 'no figure, no series');

  volumes = [volumes[1]!];
  const [g1, g2] = await Promise.all([m.render(), m.render()]);
  t.equal(scrapes, 3);
  for (const g of [g1, g2]) {
    const f2 = parsePrometheusText(g);
    t.equal(sampleValue(f2, 'tidemark_tracker_mode', { volume: 'a', mode: 'data' }), undefined, 'a volume no longer in the snapshot has no series');
    t.equal(sampleValue(f2, 'tidemark_backlog_bytes', { volume: 'b' }), 0);
  }
});
