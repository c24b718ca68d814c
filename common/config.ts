// Load and validate a daemon's JSON configuration against a closed zod schema.
// An unknown key is an error that names the key and the nearest key the schema knows.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { closest, distance } from 'fastest-levenshtein';
import { z } from 'zod';
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
  let s: unknown = schema;
  const unwrap = (x: unknown): unknown => {
    while (x && typeof (x as { unwrap?: unknown }).unwrap === 'function') x = (x as { unwrap(): unknown }).unwrap();
    return x;
  };
  for (const step of at) {
    s = unwrap(s);
    if (typeof step === 'number') s = (s as { element?: unknown }).element;
    else s = (s as { shape?: Record<string, unknown> }).shape?.[String(step)];
  }
  s = unwrap(s);
  return Object.keys((s as { shape?: object }).shape ?? {});
}

function where(at: readonly PropertyKey[]): string {
  return at.length === 0 ? 'top level' : at.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '');
}

export function validateConfig<S extends z.ZodType>(schema: S, raw: unknown, source = 'config'): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    const known = keysAt(schema, issue.path);
    const fullKey = [...issue.path.map(String), key].join('.');
    return throwErr(tmError('TM_ERR_CONFIG_UNKNOWN_KEY', `${source}: unknown key "${fullKey}" at ${where(issue.path)}; ${didYouMean(key, known)}`, { key: fullKey, suggestion: nearest(key, known) }));
  }
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
export const tlsSchema = z.strictObject({ ca: z.string(), cert: z.string(), key: z.string() });
export const endpointSchema = z.strictObject({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535) });
export const volumeIdSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'volume id: 1-64 characters of A-Z a-z 0-9 . _ -');
export const nodeNameSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'name: 1-64 characters of A-Z a-z 0-9 . _ -');
