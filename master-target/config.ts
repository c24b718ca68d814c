// The master target's configuration: where process servers connect and where each replica lives.
import { z } from 'zod';
import { DEFAULTS } from '../common/defaults.js';
import { parseDuration } from './retention/policy.js';
import { connectionsSchema, endpointSchema, loadConfigFile, nodeNameSchema, operatorListenSchema, tlsSchema, volumeIdSchema, uniqueVolumeIds } from '../common/config.js';

const R = DEFAULTS.masterTarget.retention;
const duration = z.string().refine((x) => parseDuration(x) !== null, 'a duration such as "500ms", "30s", "15m", "72h" or "30d"').transform((x) => parseDuration(x)!);
const tagSchema = z.string().regex(/^[\w.:@+-]{1,64}$/, 'tag: 1-64 characters of A-Z a-z 0-9 _ . : @ + -');

const retentionSchema = z.strictObject({
  window: duration.prefault(R.window),
  appWindow: duration.prefault(R.appWindow),
  /** Past `after`, keep one point per `every` (the oldest in each interval). */
  tiers: z.array(z.strictObject({ after: duration, every: duration })).prefault(R.tiers.map((t) => ({ ...t }))),
  /** Points carrying one of these tags are never thinned or expired (bookmarks); only a space-cap purge removes them. */
  pinTags: z.array(tagSchema).default([]),
  maxBytes: z.number().int().positive().optional(),
  onFull: z.enum(['purge', 'pause']).default(R.onFull),
  maintenanceIntervalMs: z.number().int().min(100).default(R.maintenanceIntervalMs),
}).transform((r) => ({
  policy: { windowMs: r.window, appWindowMs: r.appWindow, tiers: r.tiers.map((t) => ({ afterMs: t.after, everyMs: t.every })), pinTags: r.pinTags },
  maxBytes: r.maxBytes ?? null,
  onFull: r.onFull,
  maintenanceIntervalMs: r.maintenanceIntervalMs,
}));

const O = DEFAULTS.masterTarget.objectStore;
const S = DEFAULTS.masterTarget.space;
/**
 * Long-term retention in the bucket: every point for `keepAll`, then per tier one point each `every` until
 * `for` (e.g. hourly for 7d, daily for 365d); older than `maxAge` (default: the longest tier) expires;
 * `maxBytes` expires the oldest first; points with a `pinTags` tag are never expired.
 */
const bucketRetentionSchema = z.strictObject({
  keepAll: duration.prefault('24h'),
  tiers: z.array(z.strictObject({ every: duration, for: duration })).min(1).prefault([{ every: '1h', for: '7d' }, { every: '1d', for: '365d' }]),
  maxAge: duration.optional(),
  maxBytes: z.number().int().positive().optional(),
  pinTags: z.array(tagSchema).default([]),
  interval: duration.prefault('10m'),
}).transform((r) => ({
  keepAllMs: r.keepAll,
  tiers: r.tiers.map((t) => ({ everyMs: t.every, forMs: t.for })),
  maxAgeMs: r.maxAge ?? Math.max(...r.tiers.map((t) => t.for)),
  maxBytes: r.maxBytes ?? null,
  pinTags: r.pinTags,
  intervalMs: r.interval,
}));
/**
 * The bucket tier of a volume. Credentials come from `credentialsFile` (JSON: accessKeyId,
 * secretAccessKey; keep it 0600) or the environment (TIDEMARK_S3_ACCESS_KEY_ID / ..._SECRET_ACCESS_KEY,
 * else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); never written to logs or status.
 */
export const objectStoreSchema = z.strictObject({
  endpoint: z.string().url(),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name: 3-63 characters of a-z 0-9 . -'),
  prefix: z.string().regex(/^[\w./-]*$/, 'prefix: characters A-Z a-z 0-9 _ . / -').transform((x) => x.replace(/^\/+|\/+$/g, '')).default(O.prefix),
  region: z.string().min(1).default(O.region),
  credentialsFile: z.string().min(1).optional(),
  imageInterval: duration.prefault(O.imageInterval),
  fullEvery: z.number().int().min(1).max(10_000).default(O.fullEvery),
  pollIntervalMs: z.number().int().min(100).default(O.pollIntervalMs),
  partSizeMiB: z.number().int().min(5).max(5120).default(O.partSizeMiB),
  concurrency: z.number().int().min(1).max(64).default(O.concurrency),
  /** Expire old history in the bucket by tiers; absent, the bucket keeps everything. */
  retention: bucketRetentionSchema.optional(),
});

export const mtConfigSchema = z.strictObject({
  name: nodeNameSchema,
  stateDir: z.string().min(1),
  tls: tlsSchema,
  listen: endpointSchema.default({ host: '127.0.0.1', port: DEFAULTS.ports.masterTarget }),
  statusPort: z.number().int().min(0).max(65535).default(0),
  /** Operator actions over mutual TLS for a configuration server on another host (docs/SECURITY.md). */
  operatorListen: operatorListenSchema,
  /** Largest differential (uncompressed bytes) taken from a peer; more is refused (TM_ERR_DIFF_TOO_LARGE). */
  maxDiffBytes: z.number().int().min(1024 * 1024).max(16 * 1024 * 1024 * 1024).default(DEFAULTS.transfer.maxDiffBytes),
  /**
   * Where `tidemark recover`, `failover` and `recover --group` may write (docs/SECURITY.md): files only
   * inside `roots`, block devices only those listed in `devices` (and only with --device). Nothing is
   * allowed until configured.
   */
  recovery: z.strictObject({
    roots: z.array(z.string().min(1)).default([]),
    devices: z.array(z.string().min(1)).default([]),
  }).default({ roots: [], devices: [] }),
  /** Health warning / critical when a filesystem the master target writes to has less than this % free. */
  space: z.strictObject({
    warningFreePercent: z.number().min(0).max(100).default(S.warningFreePercent),
    criticalFreePercent: z.number().min(0).max(100).default(S.criticalFreePercent),
    checkIntervalMs: z.number().int().min(100).max(3_600_000).default(S.checkIntervalMs),
  }).refine((x) => x.criticalFreePercent <= x.warningFreePercent, { message: 'criticalFreePercent must not be above warningFreePercent' }).prefault({}),
  volumes: z.array(z.strictObject({
    id: volumeIdSchema,
    /** Certificate names (CN) of the process servers that may send this volume; no other peer can open it. */
    processServers: z.array(nodeNameSchema).min(1, 'name at least one process server certificate allowed to send this volume'),
    /** Image file (created at the source's size) or block device (at least the source's size). */
    replica: z.string().min(1),
    /** Keep reflink snapshots of the replica at its last `keep` recovery points (XFS, btrfs). */
    snapshots: z.strictObject({ dir: z.string().min(1), keep: z.number().int().min(1).max(100_000) }).optional(),
    /** Keep before-images so any retained point can be recovered (docs/OPERATIONS.md, retention). */
    retention: retentionSchema.optional(),
    /** Upload retention and base images to an S3-API bucket (needs `retention`). */
    objectStore: objectStoreSchema.optional(),
  }).refine((v) => !v.objectStore || v.retention, { message: 'objectStore needs retention on the volume (the bucket holds its segments)', path: ['objectStore'] })).min(1).superRefine(uniqueVolumeIds),
  /** Bounds on the TLS port: handshake deadline, connections in total and per address. */
  connections: connectionsSchema,
});

export type MtConfig = z.output<typeof mtConfigSchema> & { configDir: string };

export function loadMtConfig(file: string): MtConfig {
  return loadConfigFile(mtConfigSchema, file);
}
