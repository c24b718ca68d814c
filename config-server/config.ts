// The configuration server's config: where it keeps its store, the HTTPS listener of the website, who may
// log in, which daemons it watches (their status port, and for actions their state folder on this host),
// and the recovery plans it can run. Closed schema, like every daemon's (common/config.ts).
import { z } from 'zod';
import { loadConfigFile, nodeNameSchema, resolveFrom, volumeIdSchema } from '../common/config.js';
import { tmError } from '../common/errors.js';

export const CS_DEFAULTS = {
  port: 7430,
  intervalMs: 10_000,
  sessionTtlMs: 8 * 3_600_000,
} as const;

const daemonSchema = z.strictObject({
  name: nodeNameSchema,
  role: z.enum(['agent', 'process-server', 'master-target']),
  /** The daemon's status port, http://127.0.0.1:<port> (the status port answers loopback only). */
  statusUrl: z.url({ protocol: /^http$/ }).optional(),
  /**
   * The daemon's state folder (cacheDir for a process server) on this host: its status-port file gives the
   * port when statusUrl is absent, and its operator socket is the only way actions reach the daemon.
   */
  stateDir: z.string().min(1).optional(),
  /**
   * The daemon's remote operator port (its `operatorListen`), on any host: actions go there over mutual
   * TLS with this server's certificate (role config-server) and the daemon's certificate pinned to
   * `name` and `role`, rather than through a local operator socket; its status is read there too
   * (statusUrl and stateDir are then not used for it). A process server's port answers status reads only.
   */
  remote: z.strictObject({ host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) }).optional(),
  /**
   * Runs only during reverse replication (the daemons `tidemark reverse` configures): watched, but not
   * "down" while it does not answer, and not on the fleet page's volumes (its volume ids are the forward
   * ones); the guided failback (guided.ts) checks it through its collected status.
   */
  standby: z.boolean().default(false),
  /** The daemon's config file on its host, for the commands the guided failover shows. */
  configFile: z.string().min(1).optional(),
});

const userSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, 'user name: 1-64 characters of A-Z a-z 0-9 . _ @ -'),
  role: z.enum(['viewer', 'operator']),
  /** `tidemark config-server hash-password` prints one: scrypt$N$r$p$salt$hash. Never the password. */
  passwordHash: z.string().regex(/^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/, 'passwordHash: the output of `tidemark config-server hash-password`'),
});

const stepSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('script'), name: z.string().min(1).max(128), run: z.array(z.string()).min(1), timeoutMs: z.number().int().min(100).max(86_400_000).default(300_000) }),
  z.strictObject({ kind: z.literal('approval'), name: z.string().min(1).max(128), prompt: z.string().max(1000).default('continue?') }),
  z.strictObject({ kind: z.literal('wait'), name: z.string().min(1).max(128), ms: z.number().int().min(0).max(86_400_000) }),
]);

const groupSchema = z.strictObject({
  name: z.string().min(1).max(128),
  /** Volumes failed over together; each lives on the master target named here. */
  volumes: z.array(z.strictObject({ id: volumeIdSchema, masterTarget: nodeNameSchema })).min(1),
  pre: z.array(stepSchema).default([]),
  post: z.array(stepSchema).default([]),
});

const planSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'plan name: 1-64 characters of A-Z a-z 0-9 . _ -'),
  groups: z.array(groupSchema).min(1),
});

export const configServerSchema = z.strictObject({
  name: nodeNameSchema.default('config-server'),
  /** The store (store.sqlite) and what the server writes. */
  stateDir: z.string().min(1),
  listen: z.strictObject({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(CS_DEFAULTS.port) }),
  /**
   * The website's HTTPS key and certificate: `tidemark pki issue config-server <name>`. The same
   * certificate is this server's client certificate on daemons' remote operator ports, which needs `ca`
   * (the deployment CA, to check the daemons) and reads `crl` (default crl.pem beside `ca`).
   */
  tls: z.strictObject({ cert: z.string(), key: z.string(), ca: z.string().min(1).optional(), crl: z.string().min(1).optional() }),
  /** Host names the website is reached by (checked against Host and Origin); default the listen host, localhost, 127.0.0.1. */
  hostnames: z.array(z.string().min(1)).optional(),
  intervalMs: z.number().int().min(200).max(3_600_000).default(CS_DEFAULTS.intervalMs),
  sessionTtlMs: z.number().int().min(60_000).max(30 * 86_400_000).default(CS_DEFAULTS.sessionTtlMs),
  users: z.array(userSchema).default([]),
  daemons: z.array(daemonSchema).default([]),
  plans: z.array(planSchema).default([]),
  /**
   * The guided failover, reverse and failback (guided.ts): where the commands it shows put the reverse
   * configs (`<dir>/<volume>`, on the master target's host), the CA folder that issues their
   * certificates, and the sites' addresses and ports for `tidemark reverse`.
   */
  failback: z.strictObject({
    dir: z.string().min(1),
    pki: z.string().min(1).optional(),
    primaryHost: z.string().min(1).optional(),
    secondaryHost: z.string().min(1).optional(),
    psPort: z.number().int().min(1).max(65535).optional(),
    mtPort: z.number().int().min(1).max(65535).optional(),
    /**
     * Remote operator ports for the reverse daemons (`tidemark reverse --agent-operator-port` ...), so this
     * server reaches them on other hosts (`remote` in the entries the page shows); `operatorClients`: the
     * certificate names allowed there (`--operator-clients`), e.g. this server's.
     */
    agentOperatorPort: z.number().int().min(1).max(65535).optional(),
    psOperatorPort: z.number().int().min(1).max(65535).optional(),
    mtOperatorPort: z.number().int().min(1).max(65535).optional(),
    operatorClients: z.array(nodeNameSchema).min(1).max(1000).optional(),
  }).optional(),
  /** Where test failovers and recoveries started from the website write; must be under the master target's recovery.roots. */
  recoveryDir: z.string().min(1).optional(),
});

export type ConfigServerConfig = z.output<typeof configServerSchema> & { configDir: string };
export type DaemonEntry = z.output<typeof daemonSchema>;
export type PlanConfig = z.output<typeof planSchema>;
export type PlanStep = z.output<typeof stepSchema>;

export function loadConfigServerConfig(file: string): ConfigServerConfig {
  const cfg = loadConfigFile(configServerSchema, file) as ConfigServerConfig;
  return checked(cfg, file);
}

/** Cross-field checks: unique names, a way to reach each daemon. */
export function checked(cfg: ConfigServerConfig, source: string): ConfigServerConfig {
  const dup = (xs: string[]): string | undefined => xs.find((x, i) => xs.indexOf(x) !== i);
  const d = dup(cfg.daemons.map((x) => x.name));
  if (d) throw tmError('TM_ERR_CONFIG_INVALID', `${source}: daemons: "${d}" is listed twice`, { key: 'daemons' });
  const u = dup(cfg.users.map((x) => x.name));
  if (u) throw tmError('TM_ERR_CONFIG_INVALID', `${source}: users: "${u}" is listed twice`, { key: 'users' });
  const p = dup(cfg.plans.map((x) => x.name));
  if (p) throw tmError('TM_ERR_CONFIG_INVALID', `${source}: plans: "${p}" is listed twice`, { key: 'plans' });
  for (const x of cfg.daemons) {
    if (x.statusUrl === undefined && x.stateDir === undefined && x.remote === undefined) throw tmError('TM_ERR_CONFIG_INVALID', `${source}: daemons: "${x.name}" needs remote (its operatorListen), statusUrl or stateDir`, { key: 'daemons' });
    if (x.remote && cfg.tls.ca === undefined) throw tmError('TM_ERR_CONFIG_INVALID', `${source}: daemons: "${x.name}" has a remote operator port, which needs tls.ca (the deployment CA) to check the daemon`, { key: 'tls.ca' });
  }
  const mts = new Set(cfg.daemons.filter((x) => x.role === 'master-target').map((x) => x.name));
  for (const plan of cfg.plans) for (const g of plan.groups) for (const v of g.volumes) {
    if (!mts.has(v.masterTarget)) throw tmError('TM_ERR_CONFIG_INVALID', `${source}: plans: "${plan.name}" group "${g.name}": no master target "${v.masterTarget}" among daemons`, { key: 'plans' });
  }
  return cfg;
}

export function csPath(cfg: ConfigServerConfig, p: string): string {
  return resolveFrom(cfg.configDir, p);
}
