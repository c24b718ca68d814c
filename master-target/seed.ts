// Attaching a replica seeded out of band (a disk shipped, a restored backup): check it and record that
// it is a deliberate seed. The master target hashes it when the agent first connects (only then are the
// source's size and block size known), and the initial resync sends only the blocks that differ.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { volumeSize } from '../common/device.js';
import { ensureDir, writeFileDurable } from '../common/durable.js';
import { tmError } from '../common/errors.js';
import type { Logger } from '../common/log.js';

export const SEED_FILE = 'seed.json';

export async function seedReplica(volumeDir: string, replica: string, log: Logger): Promise<{ replica: string; sizeBytes: number }> {
  if (await fsp.stat(path.join(volumeDir, 'state.json')).then(() => true, () => false)) {
    throw tmError('TM_ERR_REPLICATION_MISMATCH', `volume in ${volumeDir} is already being replicated; to bring its replica in step run \`tidemark resync <volume>\` against the agent`, { path: volumeDir });
  }
  const sizeBytes = await volumeSize(replica).catch((e: Error) => {
    throw tmError('TM_ERR_IO', `seeded replica ${replica} cannot be read: ${e.message}`, { path: replica });
  });
  await ensureDir(volumeDir);
  await writeFileDurable(path.join(volumeDir, SEED_FILE), JSON.stringify({ replica, sizeBytes, attachedAt: Date.now() }));
  log.info({ replica, sizeBytes }, 'seeded replica attached');
  return { replica, sizeBytes };
}
