// The SQLite store: rollups keep the max of each figure per bucket, tiers are pruned by age, what was
// recorded is there after reopening, and a store from a newer version is refused untouched.
import Database from 'better-sqlite3';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { codeOf } from '../../../common/errors.js';
import { SqliteStore, STORE_FILE } from '../../../config-server/sqlite-store.js';
import { TIERS, tierFor, type VolumeSample } from '../../../config-server/store.js';

const sample = (atMs: number, rpoMs: number | null, applied: number, psBacklog: number | null = 0): VolumeSample => ({ volume: 'vol1', atMs, rpoMs, agentBacklog: 0, psBacklog, mtBacklog: 0, appliedBytes: applied, appliedSeq: applied / 10, mode: 'data' });

t.test('rollups, tiers, pruning, reopen', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-cs-store-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const base = 1_700_000_000_000 - (1_700_000_000_000 % 600_000);
  let s = await SqliteStore.open(dir);
  s.record([sample(base, 500, 100), sample(base + 10_000, 2000, 200, null), sample(base + 20_000, null, 300, 7)], [{ volume: 'vol1', seq: 3, atMs: base, consistency: 'APP', tags: ['nightly'] }], []);
  s.record([sample(base + 70_000, 100, 400)], [], [{ name: 'mt-1', up: false, cause: 'connection refused', sinceMs: base, lastOkMs: null, snapshot: { role: 'master-target' } }]);
  t.equal(s.history('vol1', TIERS[0]!, 0).length, 4, 'every raw sample');
  const minute = s.history('vol1', TIERS[1]!, 0);
  t.equal(minute.length, 2, 'two minute buckets');
  t.same({ rpo: minute[0]!.rpoMs, ps: minute[0]!.psBacklog, applied: minute[0]!.appliedBytes }, { rpo: 2000, ps: 7, applied: 300 }, 'a bucket keeps the worst RPO and backlog (missing figures ignored) and the last counter');
  t.equal(s.history('vol1', TIERS[2]!, 0).length, 1, 'one ten-minute bucket');
  t.equal(tierFor(3_600_000).id, 0);
  t.equal(tierFor(86_400_000).id, 1);
  t.equal(tierFor(7 * 86_400_000).id, 2);
  const id = s.audit({ atMs: base, user: 'olga', action: 'drain', target: 'vol1', params: { a: 1 }, result: 'ok', detail: 'final point #9' });
  s.close();

  s = await SqliteStore.open(dir);
  t.same(s.points('vol1', 10).map((p) => [p.seq, p.tags]), [[3, ['nightly']]], 'points kept');
  t.same(s.daemonStates().map((d) => [d.name, d.up, d.cause, d.snapshot]), [['mt-1', false, 'connection refused', { role: 'master-target' }]], 'daemon state kept');
  t.same(s.auditList(10).map((a) => [a.id, a.user, a.action, a.result, a.params]), [[id, 'olga', 'drain', 'ok', { a: 1 }]], 'audit kept');
  s.prune(base + TIERS[0]!.keepMs + 15_000);
  t.equal(s.history('vol1', TIERS[0]!, 0).length, 2, 'raw samples older than 2 h pruned');
  t.equal(s.history('vol1', TIERS[1]!, 0).length, 2, 'minute buckets kept');
  t.ok(s.historyBytes() > 0);
  s.close();
});

t.test('a store from a newer version is refused and left as it is', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-cs-store-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const db = new Database(path.join(dir, STORE_FILE));
  db.exec('CREATE TABLE future (x)');
  db.pragma('user_version = 99');
  db.close();
  const before = await fsp.readFile(path.join(dir, STORE_FILE));
  const e = await SqliteStore.open(dir).then(() => null, (x: unknown) => x);
  t.equal(codeOf(e), 'TM_ERR_STORE_VERSION');
  t.match((e as Error).message, /version 99.*up to 1/);
  t.ok((await fsp.readFile(path.join(dir, STORE_FILE))).equals(before), 'file unchanged');
});
