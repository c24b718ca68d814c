// The agent's configuration schema: closed (unknown keys are errors), defaults from common/defaults.ts.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { endpointSchema, loadConfigFile, nodeNameSchema, tlsSchema, volumeIdSchema } from '../common/config.js';

const d = DEFAULTS.agent;

export const agentVolumeSchema = z.strictObject({
  id: volumeIdSchema,
  /** Block device (/dev/sdb, /dev/loop3) or image file. */
  path: z.string().min(1),
  tracker: z.enum(['scan']).default(d.tracker),
  capture: z.enum(['none']).default(d.capture),
});

export const agentConfigSchema = z.strictObject({
  name: nodeNameSchema,
  stateDir: z.string().min(1),
  tls: tlsSchema,
  processServer: endpointSchema.default({ host: '127.0.0.1', port: DEFAULTS.ports.processServer }),
  statusPort: z.number().int().min(0).max(65535).default(0),
  blockSize: z.number().int().min(512).max(1024 * 1024).refine((n) => (n & (n - 1)) === 0, 'blockSize must be a power of two').default(d.blockSize),
  cycleIntervalMs: z.number().int().min(50).default(d.cycleIntervalMs),
  maxDiffBytes: z.number().int().min(1024 * 1024).max(256 * 1024 * 1024).default(d.maxDiffBytes),
  journalQuotaBytes: z.number().int().min(1024 * 1024).default(d.journalQuotaBytes),
  resyncWindowBytes: z.number().int().min(1024 * 1024).max(1024 * 1024 * 1024).default(d.resyncWindowBytes),
  window: z.number().int().min(1).max(64).default(DEFAULTS.transfer.window),
  volumes: z.array(agentVolumeSchema).min(1),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentVolumeConfig = z.output<typeof agentVolumeSchema>;

export function loadAgentConfig(file: string): AgentConfig & { configDir: string } {
  return loadConfigFile(agentConfigSchema, file);
}
