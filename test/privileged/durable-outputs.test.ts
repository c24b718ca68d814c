// Outputs that name data the system relies on are durable by name too (issue 11 item 7): a new sparse
// replica's directory entry is fsync'd before its hash table says it exists, and a point snapshot is
// cloned under a temp name, fsync'd, renamed and its directory fsync'd. The durable.js helpers are the
// real ones, wrapped to record what was made durable.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import * as real from '../../common/durable.js';
import { silentLogger } from '../../common/log.js';
import { makeXfs, privileged } from './require-root.js';

function recording(): { calls: string[]; durable: typeof real } {
  const calls: string[] = [];
  return {
    calls,
    durable: {
      ...real,
      fsyncDir: async (d: string) => { calls.push(`fsyncDir ${d}`); await real.fsyncDir(d); },
      syncFile: async (f: string) => { calls.push(`syncFile ${f}`); await real.syncFile(f); },
      commitRename: async (a: string, b: string) => { calls.push(`commitRename ${a} ${b}`); await real.commitRename(a, b); },
    },
  };
}

t.test('a new sparse replica: its directory is fsync\'d', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const { mnt } = makeXfs(t, 300);
  const { calls, durable } = recording();
  const { Replica } = await t.mockImport<typeof import('../../master-target/replica.js')>('../../master-target/replica.js', { '../../common/durable.js': durable });
  const dir = path.join(mnt, 'replicas');
  fs.mkdirSync(dir);
  const r = await Replica.createSparse(path.join(dir, 'r.img'), 8 << 20);
  await r.close();
  t.equal(fs.statSync(path.join(dir, 'r.img')).size, 8 << 20, 'created at the size asked');
  t.ok(calls.includes(`fsyncDir ${dir}`), 'and its directory fsync\'d', { calls });
});

t.test('a point snapshot: cloned to a temp name, fsync\'d, renamed durably; equal to the replica', async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  const { mnt } = makeXfs(t, 300);
  const { calls, durable } = recording();
  const { PointSnapshots } = await t.mockImport<typeof import('../../master-target/point-snapshots.js')>('../../master-target/point-snapshots.js', { '../../common/durable.js': durable });
  const replica = path.join(mnt, 'replica.img');
  const data = randomBytes(4 << 20);
  fs.writeFileSync(replica, data);
  const snaps = new PointSnapshots('vol1', replica, { dir: path.join(mnt, 'snaps'), keep: 2 }, silentLogger());
  await snaps.open();
  await snaps.take({ seq: 7, atMs: Date.now(), consistency: 'CRASH', tags: [], appliedAt: Date.now() });
  const out = snaps.pathOf(7);
  t.ok(fs.readFileSync(out).equals(data), 'the snapshot holds the replica\'s bytes');
  const rename = calls.find((c) => c.startsWith('commitRename ') && c.endsWith(` ${out}`));
  t.ok(rename, 'it was renamed into place durably (rename + directory fsync)', { calls });
  const tmp = rename?.split(' ')[1];
  t.ok(tmp !== undefined && calls.indexOf(`syncFile ${tmp}`) >= 0 && calls.indexOf(`syncFile ${tmp}`) < calls.indexOf(rename!), 'after the clone itself was fsync\'d');
  t.same(fs.readdirSync(path.join(mnt, 'snaps')).filter((n) => n.endsWith('.tmp')), [], 'no temp file left');
});
