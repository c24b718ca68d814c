// RPO from /metrics when there are recovery points: an image file on XFS captured with reflink makes a
// crash-consistent point each time it changes, and the agent's (journaled) and the master target's
// (applied) views of the newest one agree once the chain has converged. (Without recovery points,
// capture `none`, test/integration/metrics.test.ts checks that RPO is +Inf.)
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab, type DaemonName } from '../../lab/lab.js';
import { STATUS_PORT_FILE } from '../../common/status-server.js';
import { makeImage, sha256, startWriter } from '../integration/helpers.js';
import { sampleValue, scrapeMetrics, type Family } from '../integration/prom-text.js';
import { makeXfs, privileged, tempDir } from './require-root.js';
import { sleep } from './protected.js';

async function metrics(lab: Lab, name: DaemonName): Promise<Map<string, Family>> {
  return scrapeMetrics(Number(await fsp.readFile(path.join(lab.stateDirs[name], STATUS_PORT_FILE), 'utf8')));
}

t.test('RPO and recovery point timestamps with reflink capture', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const xfs = makeXfs(t).mnt;
  const source = path.join(xfs, 'source.img');
  const replica = path.join(xfs, 'replica.img');
  await makeImage(source, 16, 4);
  // The lab folder is not on the XFS: the lab's log streams stay open until the process ends.
  const lab = await Lab.create({ dir: tempDir(t), volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink' } }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  const started = Date.now();
  for (const d of ['mt', 'ps', 'agent'] as const) lab.start(d);
  const writer = startWriter(source, 16 << 20, 50);
  await sleep(1500).finally(() => writer.stop());
  const stoppedAt = Date.now();
  await lab.waitConverged(stoppedAt, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');

  const a = await metrics(lab, 'agent');
  const m = await metrics(lab, 'mt');
  const now = Date.now();
  const at = { agent: sampleValue(a, 'tidemark_recovery_point_timestamp_seconds', { volume: 'vol1', hop: 'agent', consistency: 'crash' }), mt: sampleValue(m, 'tidemark_recovery_point_timestamp_seconds', { volume: 'vol1', hop: 'mt', consistency: 'crash' }) };
  t.ok(at.mt !== undefined && at.mt * 1000 >= started && at.mt * 1000 <= now, `the master target applied a crash point captured during the test (${at.mt})`);
  t.equal(at.agent, at.mt, 'the agent journaled no newer point than the one applied: they agree after convergence');
  t.equal(sampleValue(m, 'tidemark_recovery_point_timestamp_seconds', { volume: 'vol1', hop: 'mt', consistency: 'app' }), undefined, 'no app-consistent point (no freeze)');
  for (const [hop, f] of [['agent', a], ['mt', m]] as const) {
    const rpo = sampleValue(f, 'tidemark_rpo_seconds', { volume: 'vol1', hop })!;
    t.ok(Number.isFinite(rpo) && rpo >= 0 && rpo <= (now - at.mt! * 1000) / 1000 + 1, `${hop}: RPO ${rpo.toFixed(1)} s is the age of that point`);
  }
});
