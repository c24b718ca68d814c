// The process server's configuration: where agents connect, which agent owns which volume, which
// master target each volume is forwarded to, and the bandwidth towards them.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { connectionsSchema, didYouMean, endpointSchema, loadConfigFile, nodeNameSchema, operatorListenSchema, tlsSchema, volumeIdSchema, uniqueVolumeIds } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { throttleSchema } from './schedule.js';

const percent = z.number().min(0).max(100);
const cacheSchema = z.strictObject({
  quotaBytes: z.number().int().min(1024 * 1024).optional(),
  quotaPercent: z.number().gt(0).max(100).default(DEFAULTS.processServer.cache.quotaPercent),
  warningFreePercent: percent.default(DEFAULTS.processServer.cache.warningFreePercent),
  criticalFreePercent: percent.default(DEFAULTS.processServer.cache.criticalFreePercent),
  slowBelowFreePercent: percent.default(DEFAULTS.processServer.cache.slowBelowFreePercent),
  stopBelowFreePercent: percent.default(DEFAULTS.processServer.cache.stopBelowFreePercent),
  resumeAboveFreePercent: percent.default(DEFAULTS.processServer.cache.resumeAboveFreePercent),
  maxAcceptDelayMs: z.number().int().min(0).max(60_000).default(DEFAULTS.processServer.cache.maxAcceptDelayMs),
  backlogWarningMs: z.number().int().min(1000).default(DEFAULTS.processServer.cache.backlogWarningMs),
  backlogCriticalMs: z.number().int().min(1000).default(DEFAULTS.processServer.cache.backlogCriticalMs),
}).superRefine((c, ctx) => {
  const order = (lo: keyof typeof c, hi: keyof typeof c, strict = false): void => {
    const [a, b] = [Number(c[lo]), Number(c[hi])];
    if (strict ? a >= b : a > b) ctx.addIssue({ code: 'custom', path: [lo], message: `${lo} (${a}) must be ${strict ? 'below' : 'at most'} ${hi} (${b})` });
  };
  order('criticalFreePercent', 'warningFreePercent');
  order('stopBelowFreePercent', 'slowBelowFreePercent');
  order('stopBelowFreePercent', 'resumeAboveFreePercent', true);
  order('backlogWarningMs', 'backlogCriticalMs');
});

export const psConfigSchema = z.strictObject({
  name: nodeNameSchema,
  cacheDir: z.string().min(1),
  tls: tlsSchema,
  listen: endpointSchema.default({ host: '127.0.0.1', port: DEFAULTS.ports.processServer }),
  statusPort: z.number().int().min(0).max(65535).default(0),
  compression: z.enum(['lz4', 'none']).default(DEFAULTS.processServer.compression),
  /** Adaptive compression: a volume whose LZ4 saved less than this % of a window's bytes rests (stored raw) a while; 0: never. */
  compressionMinSavingPercent: z.number().min(0).max(100).default(DEFAULTS.processServer.compressionMinSavingPercent),
  window: z.number().int().min(1).max(64).default(DEFAULTS.transfer.window),
  /** Largest differential (uncompressed bytes) taken from a peer; more is refused (TM_ERR_DIFF_TOO_LARGE). */
  maxDiffBytes: z.number().int().min(1024 * 1024).max(16 * 1024 * 1024 * 1024).default(DEFAULTS.transfer.maxDiffBytes),
  /** `name` is the master target's certificate name (CN): a server presenting any other is refused. */
  masterTargets: z.array(z.strictObject({ name: nodeNameSchema, host: z.string().default('127.0.0.1'), port: z.number().int().min(1).max(65535) })).min(1),
  volumes: z.array(z.strictObject({ id: volumeIdSchema, agent: nodeNameSchema, masterTarget: nodeNameSchema })).min(1).superRefine(uniqueVolumeIds),
  /** Bandwidth cap towards the master targets (stored bytes/s), with a local-time schedule; none: unlimited. */
  throttle: throttleSchema.optional(),
  /** Cache quota, backpressure to agents and health (process-server/health.ts, docs/OPERATIONS.md). */
  cache: cacheSchema.default({ ...DEFAULTS.processServer.cache }),
  /** Bounds on the TLS port: handshake deadline, connections in total and per address. */
  connections: connectionsSchema,
  /**
   * The remote operator port (common/operator-listener.ts), for a configuration server on another host:
   * it answers only the read-only `status` and `metrics` (a process server takes no operator actions).
   */
  operatorListen: operatorListenSchema,
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
