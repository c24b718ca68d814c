// Load and validate a daemon's JSON configuration against a closed zod schema.
// An unknown key is an error that names the key and the nearest key the schema knows.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { closest, distance } from 'fastest-levenshtein';
import { z } from 'zod';
import { DEFAULTS } from './defaults.js';
import { tmError, type TidemarkError } from './errors.js';

/** The nearest candidate to `name`, if it is close enough to be a plausible typo. */
export function nearest(name: string, candidates: readonly string[]): string | undefined {
  if (candidates.length === 0) return undefined;
  const best = closest(name, candidates as string[]);
  return distance(name, best) <= Math.max(2, Math.floor(best.length / 2)) ? best : undefined;
}

export function didYouMean(name: string, candidates: readonly string[]): string {
  const n = nearest(name, candidates);
  return n === undefined ? `valid: ${candidates.join(', ') || '(none)'}` : `did you mean "${n}"?`;
}

/** The keys an object schema accepts at `at` (a zod issue path), looking through arrays and wrappers. */
function keysAt(schema: z.ZodType, at: readonly PropertyKey[]): string[] {
  type Node = { unwrap?: () => Node; element?: Node; shape?: Record<string, Node> } | undefined;
  // Optional, default and array schemas all have unwrap() in zod 4; an array unwraps to its element.
  const unwrap = (x: Node): Node => {
    while (x && !x.shape && typeof x.unwrap === 'function') x = x.unwrap();
    return x;
  };
  let s: Node = schema as unknown as Node;
  for (const step of at) {
    s = unwrap(s);
    if (typeof step !== 'number') s = s?.shape?.[String(step)];
  }
  return Object.keys(unwrap(s)?.shape ?? {});
}

function where(at: readonly PropertyKey[]): string {
  return at.length === 0 ? 'top level' : at.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '');
}

export function validateConfig<S extends z.ZodType>(schema: S, raw: unknown, source = 'config'): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  // Name every unknown key at once: fixing one typo per restart is no way to treat an operator.
  const unknown = r.error.issues.flatMap((issue) => (issue.code === 'unrecognized_keys'
    ? issue.keys.map((key) => {
      const known = keysAt(schema, issue.path);
      const full = [...issue.path.map(String), key].join('.');
      return { full, suggestion: nearest(key, known), text: `unknown key "${full}" at ${where(issue.path)}; ${didYouMean(key, known)}` };
    })
    : []));
  if (unknown.length > 0) {
    return throwErr(tmError('TM_ERR_CONFIG_UNKNOWN_KEY', `${source}: ${unknown.map((u) => u.text).join('; ')}`, { key: unknown[0]!.full, suggestion: unknown[0]!.suggestion }));
  }
  const issue = r.error.issues[0]!;
  return throwErr(tmError('TM_ERR_CONFIG_INVALID', `${source}: ${where(issue.path)}: ${issue.message}`, { key: issue.path.join('.') }));
}

function throwErr(e: TidemarkError): never {
  throw e;
}

/** Read a JSON config file; relative paths inside it are resolved against the file's folder by the caller. */
export function loadConfigFile<S extends z.ZodType>(schema: S, file: string): z.output<S> & { configDir: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw tmError('TM_ERR_CONFIG_INVALID', `read config ${file}: ${(e as Error).message}`, { path: file });
  }
  const cfg = validateConfig(schema, raw, file) as z.output<S>;
  return Object.assign(cfg as object, { configDir: path.dirname(path.resolve(file)) }) as z.output<S> & { configDir: string };
}

export function resolveFrom(dir: string, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(dir, p);
}

// Schema parts the three daemons share.
/** `crl`: the CA's revocation list; default crl.pem beside `ca` (absent: nothing revoked yet). */
export const tlsSchema = z.strictObject({ ca: z.string(), cert: z.string(), key: z.string(), crl: z.string().min(1).optional() });
/** Bounds on a daemon's TLS port (common/tls-listener.ts). */
export const connectionsSchema = z.strictObject({
  handshakeTimeoutMs: z.number().int().min(100).max(600_000).default(DEFAULTS.listener.handshakeTimeoutMs),
  max: z.number().int().min(1).max(1_000_000).default(DEFAULTS.listener.maxConnections),
  perAddress: z.number().int().min(1).max(1_000_000).default(DEFAULTS.listener.maxPerAddress),
}).default({ handshakeTimeoutMs: DEFAULTS.listener.handshakeTimeoutMs, max: DEFAULTS.listener.maxConnections, perAddress: DEFAULTS.listener.maxPerAddress });
export const endpointSchema = z.strictObject({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535) });
/**
 * The remote operator port (common/operator-listener.ts): operator actions over mutual TLS for a
 * configuration server or operator on another host. Absent: actions only through the local socket.
 */
export const operatorListenSchema = z.strictObject({
  host: z.string().min(1).max(253),
  port: z.number().int().min(0).max(65535),
  /** Certificate names (CN) that may act; absent: any `operator` or `config-server` certificate of the CA. */
  clients: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'name: 1-64 characters of A-Z a-z 0-9 . _ -')).min(1).max(1000).optional(),
  handshakeTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
  maxConnections: z.number().int().min(1).max(10_000).default(64),
  maxPerAddress: z.number().int().min(1).max(10_000).default(16),
}).optional();
export const volumeIdSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'volume id: 1-64 characters of A-Z a-z 0-9 . _ -');
export const nodeNameSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'name: 1-64 characters of A-Z a-z 0-9 . _ -');

/**
 * A volume id listed twice in one config is refused here, naming both entries, rather than failing
 * later with an unrelated error (two volumes sharing one journal, staging or replica state).
 */
export function uniqueVolumeIds(volumes: ReadonlyArray<{ id: string }>, ctx: z.RefinementCtx): void {
  const first = new Map<string, number>();
  volumes.forEach((v, i) => {
    const j = first.get(v.id);
    if (j === undefined) first.set(v.id, i);
    else ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `volume id "${v.id}" is listed twice (volumes[${j}] and volumes[${i}]); each volume once` });
  });
}
