// The master target's configuration: where process servers connect and where each replica lives.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { endpointSchema, loadConfigFile, nodeNameSchema, tlsSchema, volumeIdSchema } from '../common/config.js';

export const mtConfigSchema = z.strictObject({
  name: nodeNameSchema,
  stateDir: z.string().min(1),
  tls: tlsSchema,
  listen: endpointSchema.default({ host: '127.0.0.1', port: DEFAULTS.ports.masterTarget }),
  statusPort: z.number().int().min(0).max(65535).default(0),
  volumes: z.array(z.strictObject({
    id: volumeIdSchema,
    /** Image file (created at the source's size) or block device (at least the source's size). */
    replica: z.string().min(1),
    /** Keep reflink snapshots of the replica at its last `keep` recovery points (XFS, btrfs). */
    snapshots: z.strictObject({ dir: z.string().min(1), keep: z.number().int().min(1).max(100_000) }).optional(),
  })).min(1),
});

export type MtConfig = z.output<typeof mtConfigSchema> & { configDir: string };

export function loadMtConfig(file: string): MtConfig {
  return loadConfigFile(mtConfigSchema, file);
}
