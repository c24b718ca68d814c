// The command line's side of the configuration server: log in over HTTPS like a browser would (the same
// session cookie, CSRF token and Origin), then read the fleet or run a plan. The password comes from
// TIDEMARK_PASSWORD or --password-file, never from the command line.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { tmError } from '../common/errors.js';

export interface CsOptions { server: string; user?: string; passwordFile?: string; ca?: string }

export interface CsSession {
  base: URL;
  cookie: string;
  csrf: string;
  ca: Buffer | undefined;
}

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string }

function request(base: URL, ca: Buffer | undefined, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(path, base), { method, headers: { origin: base.origin, ...headers }, ca, timeout: 30_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('timeout', () => req.destroy(tmError('TM_ERR_CONNECTION', `no answer from ${base.origin} in 30 s`)));
    req.on('error', (e) => reject(tmError('TM_ERR_CONNECTION', `${base.origin}: ${e.message}${/self-signed|issuer|verify/i.test(e.message) ? ' (give the project CA with --ca <ca.crt>)' : ''}`)));
    req.end(body);
  });
}

function password(o: CsOptions): string {
  if (o.passwordFile !== undefined) return readFileSync(o.passwordFile, 'utf8').split('\n')[0]!.replace(/\r$/, '');
  const env = process.env.TIDEMARK_PASSWORD;
  if (env) return env;
  throw tmError('TM_ERR_USAGE', 'the configuration server needs a password: set TIDEMARK_PASSWORD or give --password-file <file>');
}

export async function csLogin(o: CsOptions): Promise<CsSession> {
  let base: URL;
  try {
    base = new URL(o.server);
  } catch {
    throw tmError('TM_ERR_USAGE', `--server must be a URL such as https://dr-console:7430, not "${o.server.slice(0, 100)}"`);
  }
  if (base.protocol !== 'https:') throw tmError('TM_ERR_USAGE', `--server must be an https:// URL, not ${base.protocol}`);
  const user = o.user ?? process.env.TIDEMARK_USER;
  if (!user) throw tmError('TM_ERR_USAGE', 'which user? give --user <name> (or set TIDEMARK_USER)');
  const ca = o.ca !== undefined ? readFileSync(o.ca) : undefined;
  const form = new URLSearchParams({ user, password: password(o) }).toString();
  const r = await request(base, ca, 'POST', '/login', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  const set = ([] as string[]).concat(r.headers['set-cookie'] ?? []);
  const cookie = set.map((c) => c.split(';')[0]!).find((c) => c.startsWith('tm_session='));
  if (r.status !== 303 || !cookie) throw tmError('TM_ERR_FORBIDDEN', `${base.origin} refused the login of ${user} (HTTP ${r.status})`);
  const s = await request(base, ca, 'GET', '/api/session', { cookie });
  const csrf = (JSON.parse(s.body) as { csrf: string }).csrf;
  return { base, cookie, csrf, ca };
}

export async function csGet<T>(s: CsSession, path: string): Promise<T> {
  const r = await request(s.base, s.ca, 'GET', path, { cookie: s.cookie });
  if (r.status !== 200) throw answerError(r, path);
  return JSON.parse(r.body) as T;
}

/** A form POST as the website's own pages send it; the answer's Location when it redirects. */
export async function csPost(s: CsSession, path: string, form: Record<string, string>): Promise<{ status: number; location: string | null; body: string }> {
  const r = await request(s.base, s.ca, 'POST', path, { cookie: s.cookie, 'content-type': 'application/x-www-form-urlencoded' }, new URLSearchParams({ csrf: s.csrf, ...form }).toString());
  if (r.status >= 400) throw answerError(r, path);
  return { status: r.status, location: typeof r.headers.location === 'string' ? r.headers.location : null, body: r.body };
}

function answerError(r: Answer, path: string): Error {
  try {
    const j = JSON.parse(r.body) as { code?: string; message?: string };
    if (j.code === 'TM_ERR_FORBIDDEN') return tmError('TM_ERR_FORBIDDEN', `${path}: ${j.message ?? ''}`);
    return tmError('TM_ERR_PEER_ERROR', `${path}: ${j.code ?? ''} ${j.message ?? ''} (HTTP ${r.status})`);
  } catch {
    const m = /<pre id="detail">([^<]*)<\/pre>/.exec(r.body);
    return tmError('TM_ERR_PEER_ERROR', `${path}: HTTP ${r.status}${m ? `: ${m[1]}` : ''}`);
  }
}
