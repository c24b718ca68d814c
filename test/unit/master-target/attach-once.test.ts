// Two OpenVolumes of one volume at once (a process server reconnecting while its old connection is torn
// down) must prepare and attach the replica once: two appliers would each keep a hash table of their own,
// and the one persisted last would disagree with the replica (issue 11 item 2).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../../lab/lab.js';
import { silentLogger } from '../../../common/log.js';
import { loadMtConfig } from '../../../master-target/config.js';
import { MasterTarget } from '../../../master-target/server.js';

t.test('concurrent OpenVolumes of a new volume: one replica, one applier, both answered', async (t) => {
  const dir = await fsp.mkdtemp(path.join((await import('node:os')).tmpdir(), 'tm-attach-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const replica = path.join(dir, 'replica.img');
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source: path.join(dir, 'source.img'), replica }] });
  const mt = new MasterTarget(loadMtConfig(lab.configs.mt), silentLogger());
  await mt.open();
  t.teardown(() => mt.close());

  const ov = { volumeId: 'vol1', sizeBytes: 8 << 20, blockSize: 4096, replicationId: 'r1' };
  const peer = { name: 'ps-1', role: 'process-server' };
  const results = await Promise.allSettled([mt.openVolume(peer, ov), mt.openVolume(peer, ov), mt.openVolume(peer, ov)]);
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled'], 'every OpenVolume is answered', { errors: results.map((r) => (r.status === 'rejected' ? String(r.reason) : '')) });
  const target = mt.targets.get('vol1')!;
  t.ok(target.applier, 'the volume is attached');
  t.equal((await fsp.stat(replica)).size, 8 << 20, 'the replica was created at the source size');
  const again = target.applier;
  await mt.openVolume(peer, ov);
  t.equal(mt.targets.get('vol1')!.applier, again, 'a later OpenVolume keeps the same applier');
});
