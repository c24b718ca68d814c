// MtVolume, one replicated volume on the master target: the daemon's volume and the CLI's offline one are
// the same object over the same folder. A volume the daemon adopted is found offline, with its geometry
// and retention; what cannot be opened offline is refused by code.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../../lab/lab.js';
import { codeOf } from '../../../common/errors.js';
import { silentLogger } from '../../../common/log.js';
import { loadMtConfig } from '../../../master-target/config.js';
import { MasterTarget } from '../../../master-target/server.js';
import { MtVolume } from '../../../master-target/volume.js';

t.test('a volume the daemon adopted opens offline from the same folder; the rest is refused by code', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-mtvolume-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const vol = (id: string, retention: boolean): { id: string; source: string; replica: string; mt?: Record<string, unknown> } =>
    ({ id, source: path.join(dir, `${id}-source.img`), replica: path.join(dir, `${id}-replica.img`), ...(retention ? { mt: { retention: {} } } : {}) });
  const lab = await Lab.create({ dir, volumes: [vol('vol1', true), vol('vol2', false), vol('vol3', true)] });
  const cfg = loadMtConfig(lab.configs.mt);
  const mt = new MasterTarget(cfg, silentLogger());
  await mt.open();
  const peer = { name: 'ps-1', role: 'process-server' };
  for (const id of ['vol1', 'vol2']) await mt.openVolume(peer, { volumeId: id, sizeBytes: 8 << 20, blockSize: 4096, replicationId: `r-${id}` });
  t.equal(mt.targets.get('vol1')!.dir, MtVolume.dir(lab.stateDirs.mt, 'vol1'), 'the daemon keeps the volume in <stateDir>/volumes/<id>');
  await mt.close();

  t.same(await MtVolume.geometry(lab.stateDirs.mt, 'vol1'), { sizeBytes: 8 << 20, blockSize: 4096 }, 'its geometry is read from its state');
  const offline = await MtVolume.openOffline(cfg, 'vol1', silentLogger());
  try {
    const src = offline.recoverySource();
    t.same({ volumeId: src.volumeId, replicaPath: src.replicaPath, sizeBytes: src.sizeBytes, blockSize: src.blockSize, doneSeq: src.doneSeq() },
      { volumeId: 'vol1', replicaPath: path.join(dir, 'vol1-replica.img'), sizeBytes: 8 << 20, blockSize: 4096, doneSeq: 0 }, 'offline, the daemon\'s volume: its replica, geometry and progress');
    t.equal(src.currentPoint(), null, 'at no point before its initial resync has ended');
    t.equal(src.hashes()?.length, (8 << 20) / 4096, 'with the replica\'s hash table');
    t.same(src.retention.points(src.doneSeq(), src.currentPoint()), [], 'and its retention log, empty');
    await t.rejects(offline.attach(), { code: 'TM_ERR_USAGE' }, 'an offline volume is never attached: only the daemon applies');
  } finally {
    await offline.close();
  }

  const refused = async (id: string): Promise<string> => MtVolume.openOffline(cfg, id, silentLogger()).then(() => 'opened', (e: unknown) => `${codeOf(e)}: ${(e as Error).message}`);
  t.match(await refused('vol2'), /^TM_ERR_POINT_NOT_FOUND: vol2 has no retention configured/, 'no retention: no point to recover');
  t.match(await refused('vol3'), /^TM_ERR_POINT_NOT_FOUND: vol3 has not been replicated here yet/, 'never opened by a process server: nothing to recover');
  t.match(await refused('vol9'), /^TM_ERR_UNKNOWN_VOLUME: /, 'a volume not configured');
  await t.rejects(MtVolume.attachSeeded(lab.stateDirs.mt, 'vol1', path.join(dir, 'vol1-replica.img'), silentLogger()), { code: 'TM_ERR_REPLICATION_MISMATCH' }, 'a replicated volume cannot be seeded');
});
