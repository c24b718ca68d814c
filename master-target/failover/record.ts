// What a failover leaves behind on the master target's host: which point of which volume was recovered
// where, so `tidemark reverse` knows the failed-over volume to protect and the operator can see what was
// done. One JSON file per volume in <stateDir>/failover/; a later failover of the volume replaces it.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { ensureDir, writeFileDurable } from '../../common/durable.js';
import { tmError } from '../../common/errors.js';
import type { RecoveryPoint } from '../volume-state.js';

export interface FailoverRecord {
  volume: string;
  /** planned: the source was drained and this is its final point (no data loss); unplanned: the latest (or named) retained point. */
  kind: 'planned' | 'unplanned';
  point: RecoveryPoint;
  /** The failed-over volume: a file or device written by recovery. */
  out: string;
  sizeBytes: number;
  blockSize: number;
  method: 'reflink' | 'copy';
  at: number;
}

export function failoverRecordPath(stateDir: string, volume: string): string {
  return path.join(stateDir, 'failover', `${volume}.json`);
}

export async function writeFailoverRecord(stateDir: string, r: FailoverRecord): Promise<string> {
  const file = failoverRecordPath(stateDir, r.volume);
  await ensureDir(path.dirname(file));
  await writeFileDurable(file, JSON.stringify(r, null, 2));
  return file;
}

export async function readFailoverRecord(stateDir: string, volume: string): Promise<FailoverRecord | null> {
  const raw = await fsp.readFile(failoverRecordPath(stateDir, volume), 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(e)));
  if (raw === null) return null;
  try {
    return JSON.parse(raw) as FailoverRecord;
  } catch {
    // The parser's message quotes the file's first bytes: never repeat them.
    throw tmError('TM_ERR_STATE_CORRUPT', `failover record ${failoverRecordPath(stateDir, volume)} is not valid JSON`, { volume });
  }
}
