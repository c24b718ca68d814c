// The process server's configuration: where agents connect, which agent owns which volume, and which
// master target each volume is forwarded to.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { didYouMean, endpointSchema, loadConfigFile, nodeNameSchema, tlsSchema, volumeIdSchema } from '../common/config.js';
import { tmError } from '../common/errors.js';

export const psConfigSchema = z.strictObject({
  name: nodeNameSchema,
  cacheDir: z.string().min(1),
  tls: tlsSchema,
  listen: endpointSchema.default({ host: '127.0.0.1', port: DEFAULTS.ports.processServer }),
  statusPort: z.number().int().min(0).max(65535).default(0),
  compression: z.enum(['lz4', 'none']).default(DEFAULTS.processServer.compression),
  window: z.number().int().min(1).max(64).default(DEFAULTS.transfer.window),
  masterTargets: z.array(z.strictObject({ name: nodeNameSchema, host: z.string().default('127.0.0.1'), port: z.number().int().min(1).max(65535) })).min(1),
  volumes: z.array(z.strictObject({ id: volumeIdSchema, agent: nodeNameSchema, masterTarget: nodeNameSchema })).min(1),
});

export type PsConfig = z.output<typeof psConfigSchema> & { configDir: string };

export function loadPsConfig(file: string): PsConfig {
  const cfg = loadConfigFile(psConfigSchema, file);
  const targets = cfg.masterTargets.map((m) => m.name);
  for (const v of cfg.volumes) {
    if (!targets.includes(v.masterTarget)) {
      throw tmError('TM_ERR_CONFIG_INVALID', `${file}: volume ${v.id} routes to master target "${v.masterTarget}", which is not configured; ${didYouMean(v.masterTarget, targets)}`, { key: 'volumes.masterTarget' });
    }
  }
  return cfg;
}
