// Small pieces of request handling for the website: cookies, bounded form bodies, security headers.
import type http from 'node:http';
import { tmError } from '../common/errors.js';
import type { Viewer } from './pages.js';

/** One request as the routes see it: who asks (null: not logged in) and the hash of their session id. */
export interface Req { req: http.IncomingMessage; res: http.ServerResponse; url: URL; viewer: Viewer | null; sessionHash: string | null }

/** What the website's routes share: the audit log, the POST checks, the refusal answer. */
export interface RouteHelpers {
  audit(user: string, action: string, target: string, params: Record<string, unknown>, result: 'ok' | 'refused' | 'failed' | 'started', detail: string): void;
  postRefusal(r: Req, form: URLSearchParams, needSession: boolean): string | null;
  forbidden(r: Req, why: string, action: string): void;
}

export const SESSION_COOKIE = 'tm_session';
const MAX_FORM_BYTES = 16 * 1024;

export function cookies(req: http.IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out.set(part.slice(0, i).trim(), decodeURIComponent(part.slice(i + 1).trim()));
  }
  return out;
}

/** An application/x-www-form-urlencoded body of at most 16 KiB. */
export async function formBody(req: http.IncomingMessage): Promise<URLSearchParams> {
  const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_FORM_BYTES) throw tmError('TM_ERR_USAGE', `a form of more than ${MAX_FORM_BYTES} bytes`);
    chunks.push(c);
  }
  if (size > 0 && type !== 'application/x-www-form-urlencoded') throw tmError('TM_ERR_USAGE', `a form must be application/x-www-form-urlencoded, not ${type || 'untyped'}`);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** Every answer: no caching, no framing, no inline script, no referrer leaking paths elsewhere. */
export const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // Not no-referrer: with it Chromium sends "Origin: null" on the site's own forms, which the Origin check refuses.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
  'strict-transport-security': 'max-age=31536000',
};

export function send(res: http.ServerResponse, status: number, type: string, body: string, extra: Record<string, string | string[]> = {}): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, ...extra }).end(body);
}

export const sendJson = (res: http.ServerResponse, status: number, body: unknown): void => send(res, status, 'application/json', JSON.stringify(body));
export const sendHtml = (res: http.ServerResponse, status: number, body: string, extra: Record<string, string | string[]> = {}): void => send(res, status, 'text/html; charset=utf-8', body, extra);
export const redirect = (res: http.ServerResponse, to: string, extra: Record<string, string | string[]> = {}): void => send(res, 303, 'text/plain', '', { location: to, ...extra });
