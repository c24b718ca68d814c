// Operator actions (recover, test failover, drain, resume, resync...) reach a daemon only through a Unix
// socket in its state folder, <stateDir>/operator.sock: mode 0600, owned by the daemon's user, and every
// connection's peer checked by the kernel's record of it (SO_PEERCRED). Only root or the daemon's own user
// may act; a web page cannot reach a Unix socket at all. Requests are HTTP (POST /<action>?k=v) so the
// CLI speaks to it with node:http. Every request is logged with the caller's uid and pid.
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { codeOf, ERRORS, tmError, type ErrorCode } from './errors.js';
import type { Logger } from './log.js';
import { peerCredentials, type PeerCredentials } from '../native/index.js';

export const OPERATOR_SOCKET = 'operator.sock';

/** sun_path holds 108 bytes with its NUL. */
const MAX_SOCKET_PATH = 107;

export type OperatorAction = (action: string, params: URLSearchParams, caller: PeerCredentials) => Promise<unknown>;

export interface OperatorSocket {
  readonly path: string;
  close(): Promise<void>;
}

export function operatorSocketPath(stateDir: string): string {
  const p = path.join(path.resolve(stateDir), OPERATOR_SOCKET);
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw tmError('TM_ERR_CONFIG_INVALID', `the operator socket ${p} is longer than a Unix socket path may be (${MAX_SOCKET_PATH} bytes): give the daemon a shorter stateDir (or cacheDir)`, { path: p, key: 'stateDir' });
  }
  return p;
}

/** Root, or the daemon's own user (a daemon run unprivileged is operated by its user). */
function allowed(c: PeerCredentials): boolean {
  return c.uid === 0 || c.uid === process.getuid?.();
}

/** Parameters worth a log line: everything but nothing long (a path is fine, a body is never sent). */
function logParams(params: URLSearchParams): Record<string, string> {
  return Object.fromEntries([...params].map(([k, v]) => [k, v.slice(0, 256)]));
}

const reply = (res: http.ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

/**
 * Listen on <stateDir>/operator.sock. The caller holds the state folder's lock (common/state-lock.ts), so
 * a socket file found there was left by a dead daemon and is replaced.
 */
export async function startOperatorSocket(stateDir: string, act: OperatorAction, log: Logger): Promise<OperatorSocket> {
  const file = operatorSocketPath(stateDir);
  const callers = new WeakMap<net.Socket, PeerCredentials | Error>();
  const server = http.createServer((req, res) => {
    const caller = callers.get(req.socket);
    const url = new URL(req.url ?? '/', 'http://operator');
    const action = url.pathname.slice(1);
    if (!caller || caller instanceof Error || !allowed(caller)) {
      const who = caller && !(caller instanceof Error) ? { uid: caller.uid, pid: caller.pid } : { err: caller?.message ?? 'no credentials' };
      log.warn({ action, ...who }, 'operator action refused: caller is not root or the daemon user');
      reply(res, 403, { code: 'TM_ERR_FORBIDDEN', message: 'operator actions are for root (or the daemon\'s user) only' });
      return;
    }
    if (req.method !== 'POST') {
      reply(res, 405, { code: 'TM_ERR_USAGE', message: 'operator actions are POST /<action>?<parameters>' });
      return;
    }
    const who = { action, uid: caller.uid, pid: caller.pid, params: logParams(url.searchParams) };
    log.info(who, 'operator action');
    act(action, url.searchParams, caller).then(
      (out) => reply(res, 200, out ?? {}),
      (e: unknown) => {
        const code = codeOf(e);
        log.warn({ ...who, code, err: (e as Error)?.message ?? String(e) }, 'operator action failed');
        reply(res, 400, { code, message: (e as Error)?.message ?? String(e) });
      },
    );
  });
  server.on('connection', (socket: net.Socket) => {
    try {
      callers.set(socket, peerCredentials(socket));
    } catch (e) {
      callers.set(socket, e as Error);
    }
  });
  await fsp.rm(file, { force: true });
  // No umask games (it is process-wide, and other files are being created meanwhile): a socket needs write
  // permission to connect, which the usual umasks (022, the units' 077) never give others, it is made 0600
  // at once, and the peer check below decides anyway.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, resolve);
  });
  await fsp.chmod(file, 0o600);
  let closed: Promise<void> | null = null;
  return {
    path: file,
    close: () => (closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }).then(() => fsp.rm(file, { force: true }))),
  };
}

/** Ask the daemon whose state folder is `stateDir`; its error comes back with its code. */
export function operatorRequest(stateDir: string, action: string, params: URLSearchParams, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const socketPath = operatorSocketPath(stateDir);
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: `/${action}?${params}`, method: 'POST', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        let out: Record<string, unknown>;
        try {
          out = JSON.parse(body || '{}') as Record<string, unknown>;
        } catch {
          reject(tmError('TM_ERR_PROTOCOL', `the daemon at ${socketPath} answered ${res.statusCode} with something that is not JSON`));
          return;
        }
        if (res.statusCode === 200) resolve(out);
        else reject(tmError(typeof out.code === 'string' && out.code in ERRORS ? (out.code as ErrorCode) : 'TM_ERR_IO', String(out.message ?? `HTTP ${res.statusCode}`)));
      });
    });
    req.on('timeout', () => req.destroy(tmError('TM_ERR_CONNECTION', `no answer from ${socketPath} in ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EACCES' || e.code === 'EPERM') reject(tmError('TM_ERR_FORBIDDEN', `${socketPath}: ${e.code}: operator actions are for root (or the daemon's user); run tidemark as root`, { path: socketPath }));
      else if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(tmError('TM_ERR_CONNECTION', `the daemon is not running (${e.code} on ${socketPath})`, { path: socketPath }, e));
      else reject(e);
    });
    req.end();
  });
}
