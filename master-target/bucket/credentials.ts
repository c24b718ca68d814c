// Where the bucket tier's keys come from: a JSON file ({"accessKeyId", "secretAccessKey"}) named in the
// configuration, or the environment. The keys go to the S3 client and nowhere else (not logs, not status).
import { readFileSync } from 'node:fs';
import { tmError } from '../../common/errors.js';
import type { StoreCredentials } from './store.js';

export function loadCredentials(file: string | undefined, env: NodeJS.ProcessEnv = process.env): StoreCredentials {
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw tmError('TM_ERR_CONFIG_INVALID', `object store credentials file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'not JSON'}; it must hold {"accessKeyId": ..., "secretAccessKey": ...}`, { path: file });
    }
    const c = parsed as Partial<StoreCredentials>;
    if (typeof c?.accessKeyId !== 'string' || typeof c.secretAccessKey !== 'string' || !c.accessKeyId || !c.secretAccessKey) {
      throw tmError('TM_ERR_CONFIG_INVALID', `object store credentials file ${file} must hold {"accessKeyId": ..., "secretAccessKey": ...}`, { path: file });
    }
    return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey };
  }
  const id = env.TIDEMARK_S3_ACCESS_KEY_ID ?? env.AWS_ACCESS_KEY_ID;
  const secret = env.TIDEMARK_S3_SECRET_ACCESS_KEY ?? env.AWS_SECRET_ACCESS_KEY;
  if (!id || !secret) throw tmError('TM_ERR_CONFIG_INVALID', 'object store credentials: give objectStore.credentialsFile, or set TIDEMARK_S3_ACCESS_KEY_ID and TIDEMARK_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)');
  return { accessKeyId: id, secretAccessKey: secret };
}
