// The chaos soak, short: real daemons behind chaos proxies, a stamped writer and a seeded schedule of the
// fault kinds current code survives, then the checker's verdict. The seed is printed (TIDEMARK_SEED
// replays it); `npm run soak -- --minutes N` runs it longer and with every fault kind (docs/SOAK.md).
import path from 'node:path';
import t from 'tap';
import { DEFAULT_KINDS } from '../../bench/soak/faults.js';
import { printTable, problems, toResult } from '../../bench/soak/report.js';
import { seedFrom } from '../../bench/soak/rng.js';
import { runSoak } from '../../bench/soak/soak.js';
import { privileged, tempDir } from './require-root.js';

const MINUTES = Number(process.env.TIDEMARK_SOAK_MINUTES ?? '2');
// Thinned after 40 s: fewer points to recover in the check (each is recovered and read whole), and
// retention compaction runs under the faults.
const RETENTION = { window: '24h', tiers: [{ after: '40s', every: '10s' }], maintenanceIntervalMs: 2000, maxBytes: 128 << 20, onFull: 'purge' };

t.test(`a ${MINUTES}-minute chaos soak loses nothing and every recovery point is a prefix of the writes`, async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'fallocate'])) return;
  const seed = seedFrom(process.env.TIDEMARK_SEED);
  t.comment(`soak seed ${seed} (replay: TIDEMARK_SEED=${seed}, or npm run soak -- --minutes ${MINUTES} --seed ${seed})`);
  const lines: string[] = [];
  const run = await runSoak({ minutes: MINUTES, seed, kinds: DEFAULT_KINDS, workDir: path.join(tempDir(t), 'soak'), convergeTimeoutMs: 120_000, retention: RETENTION, log: (s) => lines.push(s) });
  t.comment(lines.join('\n'));
  t.comment(printTable(toResult(run, '')));
  const v = run.verdict;
  const why = problems(run).join('\n') || 'none';
  t.ok(run.faults.length >= MINUTES * 5, `${run.faults.length} faults injected (seed ${seed})`);
  t.ok(new Set(run.faults.map((f) => f.kind)).size >= 4, `of ${new Set(run.faults.map((f) => f.kind)).size} kinds`);
  t.ok(run.converged, 'the pipeline converged once the faults were healed');
  t.ok(v.replicaEqualsSource, 'the replica equals the source');
  t.equal(v.bytesLost, 0, `bytes lost = 0 (problems: ${why})`);
  t.ok(v.pointsChecked > 0, `${v.pointsChecked} recovery points recovered and checked`);
  t.equal(v.pointsChecked + v.pointsThinnedDuringCheck, v.pointsListed, 'every listed point was checked (or thinned by retention before its turn)');
  t.equal(v.pointsFailed.length, 0, 'each recovered point is a prefix-closed state of the writer\'s history');
  t.equal(v.pointsOutOfOrder, 0, 'capture times follow sequence order');
  t.same(v.missingEvidence, [], 'every fault that must raise an alert or a resync did');
  t.same(run.unexpectedExits, [], 'no daemon crashed by itself');
});
