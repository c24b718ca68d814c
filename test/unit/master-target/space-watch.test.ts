// The master target's space levels, the config's bounds on them, and the status column an operator sees
// when a filesystem of the master target fills (the privileged mt-space test fills a real one).
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { SpaceWatch, spaceHealth } from '../../../master-target/space-watch.js';
import { mtConfigSchema } from '../../../master-target/config.js';
import { volumeHealth } from '../../../cli/status.js';

const LIMITS = { warningFreePercent: 10, criticalFreePercent: 5 };
const GiB = 1 << 30;

t.test('levels: warning below the warning share, critical below the critical share', async (t) => {
  t.same(spaceHealth(LIMITS, 100 * GiB, 50 * GiB), { freePercent: 50, health: 'ok' });
  t.same(spaceHealth(LIMITS, 100 * GiB, 10 * GiB), { freePercent: 10, health: 'ok' }, 'exactly at the warning share is still ok');
  t.equal(spaceHealth(LIMITS, 100 * GiB, 10 * GiB - 1).health, 'warning', 'a byte under it warns (rounded down, never up)');
  t.equal(spaceHealth(LIMITS, 100 * GiB, 5 * GiB).health, 'warning');
  t.equal(spaceHealth(LIMITS, 100 * GiB, 5 * GiB - 1).health, 'critical');
  t.same(spaceHealth(LIMITS, 100 * GiB, 0), { freePercent: 0, health: 'critical' }, 'full');
  t.equal(spaceHealth(LIMITS, 0, 0).health, 'critical', 'a filesystem that reports no size is not taken for healthy');
});

t.test('the config takes limits in order and refuses them out of order', async (t) => {
  const base = { name: 'mt-1', stateDir: 's', tls: { ca: 'ca', cert: 'c', key: 'k' }, volumes: [{ id: 'v', replica: 'r', processServers: ['ps-1'] }] };
  t.same(mtConfigSchema.parse(base).space, { warningFreePercent: 10, criticalFreePercent: 5, checkIntervalMs: 1000 }, 'defaults');
  t.equal(mtConfigSchema.parse({ ...base, space: { warningFreePercent: 20 } }).space.criticalFreePercent, 5, 'one key given, the others default');
  const bad = mtConfigSchema.safeParse({ ...base, space: { warningFreePercent: 5, criticalFreePercent: 10 } });
  t.notOk(bad.success, 'critical above warning is refused');
  t.match(JSON.stringify(bad.error?.issues), /criticalFreePercent must not be above warningFreePercent/);
  t.notOk(mtConfigSchema.safeParse({ ...base, space: { checkIntervalMs: 10 } }).success, 'a check interval under 100 ms is refused');
});

t.test('status shows MT DISK for the volumes whose filesystems fill, naming them', async (t) => {
  const fs = (path: string, holds: string[], freePercent: number, health: string): Record<string, unknown> => ({ path, holds, sizeBytes: GiB, availBytes: (GiB * freePercent) / 100, freePercent, health });
  const mt = (filesystems: Array<Record<string, unknown>>): Record<string, unknown> => ({
    role: 'master-target', name: 'mt-1', space: { health: 'x', reasons: [], filesystems },
    volumes: [{ id: 'db' }, { id: 'web' }],
  });
  const health = (snap: Record<string, unknown>): Record<string, string> => Object.fromEntries(volumeHealth([snap], [], Date.now()).map((v) => [v.volume, v.health]));
  t.same(health(mt([fs('/var/lib/tm', ['state (staging, retention)'], 50, 'ok'), fs('/srv', ['replica of db', 'replica of web'], 40, 'ok')])), { db: 'ok', web: 'ok' }, 'nothing to say while there is room');
  t.same(health(mt([fs('/var/lib/tm', ['state (staging, retention)'], 3, 'critical')])), { db: 'MT DISK CRITICAL', web: 'MT DISK CRITICAL' }, 'the state filesystem concerns every volume');
  t.same(health(mt([fs('/var/lib/tm', ['state (staging, retention)'], 50, 'ok'), fs('/srv/db', ['replica of db'], 8, 'warning')])), { db: 'MT DISK WARNING', web: 'ok' }, "a replica's filesystem only its volume");
  const [db] = volumeHealth([mt([fs('/var/lib/tm', ['state (staging, retention)'], 8, 'warning'), fs('/srv/db', ['replica of db'], 2, 'critical')])], [], Date.now());
  t.same(db!.problems, [{ state: 'MT DISK CRITICAL', cause: 'mt-1: /var/lib/tm 8% free (state (staging, retention)); /srv/db 2% free (replica of db)' }], 'the worst level, and every filesystem short of space');
});

t.test('a filesystem that reports no size is left out, not taken for full', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-space-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  const w = new SpaceWatch([{ dir: '/proc', holds: 'a pseudo filesystem' }, { dir: path.join(dir, 'not-made-yet', 'replicas'), holds: 'replica of v' }], LIMITS, log, 60_000);
  w.open();
  t.teardown(() => w.close());
  for (let i = 0; i < 100 && w.status().filesystems.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  const s = w.status();
  t.same(s.filesystems.map((f) => f.holds), [['replica of v']], "/proc (no size) is not listed; a folder not made yet is measured at its nearest existing parent");
  t.equal(s.filesystems[0]!.path, dir, 'that parent');
  t.same(s.errors, [], 'nothing failed to measure');
  t.notOk(logs.some((l) => l.code === 'TM_ERR_DISK_FULL'), 'and no disk-full alarm for a filesystem with no size');
});
