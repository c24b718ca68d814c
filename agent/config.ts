// The agent's configuration schema: closed (unknown keys are errors), defaults from common/defaults.ts.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { endpointSchema, loadConfigFile, nodeNameSchema, tlsSchema, volumeIdSchema } from '../common/config.js';

const d = DEFAULTS.agent;

export const agentVolumeSchema = z.strictObject({
  id: volumeIdSchema,
  /** Block device (/dev/sdb, /dev/loop3) or image file. */
  path: z.string().min(1),
  /** scan: hash and compare (portable). blocktrace: kernel block tracepoints (Linux, root, block devices). */
  tracker: z.enum(['scan', 'blocktrace']).default(d.tracker),
  /** none: live volume (fuzzy). reflink: clone of its image (crash-consistent). freeze: FIFREEZE (app-consistent). */
  capture: z.enum(['none', 'reflink', 'freeze']).default(d.capture),
  reflink: z.strictObject({
    /** Where clones go; on the image's filesystem. Default: .tidemark-clones beside the image. */
    dir: z.string().min(1).optional(),
    /** Keep the clones of the last N recovery points as local snapshots. */
    keep: z.number().int().min(0).default(d.reflinkKeep),
  }).optional(),
  freeze: z.strictObject({
    /** Where the volume's filesystem is mounted. */
    mountpoint: z.string().min(1),
    /** Shell commands run before the freeze and after the thaw (e.g. a database checkpoint). */
    pre: z.string().min(1).optional(),
    post: z.string().min(1).optional(),
    /** Bound on each script and on the time frozen; past it: killed or thawed, tag dropped. */
    timeoutMs: z.number().int().min(100).max(600_000).default(d.freezeTimeoutMs),
    /** Name of the app-consistent points. */
    tag: z.string().regex(/^[\w.:@+-]{1,64}$/, 'a tag is 1-64 letters, digits or . : @ + - _').default(d.freezeTag),
  }).optional(),
}).superRefine((v, ctx) => {
  if (v.capture === 'freeze' && !v.freeze) ctx.addIssue({ code: 'custom', path: ['freeze'], message: 'capture "freeze" needs freeze.mountpoint' });
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
  /** Process server unreachable this long: stop journaling data and keep only the dirty map. */
  bitmapAfterMs: z.number().int().min(1000).default(d.bitmapAfterMs),
  blocktrace: z.strictObject({
    /** Kernel ring buffer per CPU per volume: events kept between drains and while the agent is down. */
    bufferKiB: z.number().int().min(4).max(1024 * 1024).default(d.blocktrace.bufferKiB),
    drainIntervalMs: z.number().int().min(50).max(60_000).default(d.blocktrace.drainIntervalMs),
  }).default({ bufferKiB: d.blocktrace.bufferKiB, drainIntervalMs: d.blocktrace.drainIntervalMs }),
  volumes: z.array(agentVolumeSchema).min(1),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentVolumeConfig = z.output<typeof agentVolumeSchema>;

export function loadAgentConfig(file: string): AgentConfig & { configDir: string } {
  return loadConfigFile(agentConfigSchema, file);
}
