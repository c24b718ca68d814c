// The remote operator port (`operatorListen`): the operator actions of the local socket
// (common/operator-socket.ts), offered over mutual TLS to a configuration server or an operator on another
// host. Who may act is decided by certificate, never by address: signed by the deployment CA, not revoked
// (the CRL is re-read while running and a revoked peer's connections are dropped), with the role
// `operator` or `config-server` in its OU and, when `clients` is set, one of those names in its CN.
//
// A refused peer is told why in HTTP (403 with a code) without a byte it sent being parsed: the answer is
// written as soon as its handshake ends and what it sends is discarded. An accepted peer gets one request
// per connection, with hard bounds on everything it sends: the handshake and the request head each have
// a deadline, the head is at most 8 KiB, there is no body, the action is a word, the parameters are few,
// short and never repeated. The action then runs exactly as one from the local socket, and is logged with
// the certificate that asked for it (and the website user it was asked for, when a configuration server
// says so). Two read-only actions are answered by the listener itself, for a configuration server that
// collects status from another host: `status` (the daemon's /status snapshot) and `metrics` (its /metrics
// text, as { contentType, text }); they change nothing and are logged at debug level only, being asked
// every collection interval.
import http from 'node:http';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import type tls from 'node:tls';
import { writeFileDurable } from './durable.js';
import { codeOf, type ErrorCode } from './errors.js';
import type { Logger } from './log.js';
import type { PeerTrust } from './peer-trust.js';
import type { MetricsSource } from './status-server.js';
import { ROLES, type Role } from './pki.js';
import type { Peer } from './tls.js';
import { TlsListener, type ListenerLimits } from './tls-listener.js';

/** The port in the state folder (a configured port of 0 picks a free one). */
export const OPERATOR_PORT_FILE = 'operator-port';

/** Certificate roles that may take operator actions over the network. */
export const OPERATOR_ROLES: readonly Role[] = ['operator', 'config-server'];

/** The header a configuration server names its logged-in user in (logged by the daemon; grants nothing). */
export const ON_BEHALF_HEADER = 'x-tidemark-on-behalf-of';

export const OPERATOR_LISTEN_DEFAULTS = {
  /** Operator traffic is a few requests: a small cap, unlike the replication ports'. */
  limits: { handshakeTimeoutMs: 10_000, maxConnections: 64, maxPerAddress: 16 } satisfies ListenerLimits,
  /** From the end of the handshake to the end of the request head. */
  requestHeadMs: 10_000,
  maxHeadBytes: 8 * 1024,
  maxUrlBytes: 4096,
  maxParams: 32,
  maxValueBytes: 4096,
} as const;

const ACTION_RE = /^[a-z][a-z0-9-]{0,63}$/;
const KEY_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const USER_RE = /^[A-Za-z0-9._@-]{1,64}$/;

/** Who asked, as the daemon logs it. */
export interface RemoteCaller { name: string; role: Role; serial: string; address: string; onBehalfOf: string | null }

export type RemoteAction = (action: string, params: URLSearchParams, caller: RemoteCaller) => Promise<unknown>;

export interface OperatorListenOptions {
  host: string;
  port: number;
  trust: PeerTrust;
  /** Certificate names allowed to act; undefined: any certificate of an operator role. */
  clients?: readonly string[];
  act: RemoteAction;
  log: Logger;
  /** Where to write OPERATOR_PORT_FILE (the daemon's state folder). */
  stateDir?: string;
  limits?: Partial<ListenerLimits>;
  /** What the read-only actions `status` and `metrics` answer: the same as the loopback status port's. */
  read?: { status: () => unknown; metrics?: MetricsSource };
}

/** The read-only actions, answered from `read` rather than the daemon's operator actions. */
export const READ_ACTIONS = ['status', 'metrics'] as const;

export interface OperatorListener {
  readonly port: number;
  close(): Promise<void>;
}

const STATUS_TEXT: Record<number, string> = { 200: 'OK', 400: 'Bad Request', 403: 'Forbidden', 405: 'Method Not Allowed', 413: 'Payload Too Large', 414: 'URI Too Long' };

/** Answer a refused peer and close, reading nothing it sends (bytes are discarded, never parsed). */
function refuseInBand(socket: tls.TLSSocket, status: number, code: ErrorCode, message: string): void {
  const body = JSON.stringify({ code, message });
  socket.on('error', () => {});
  socket.on('data', () => {});
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  // A peer that neither reads nor closes holds the descriptor this long at most.
  setTimeout(() => socket.destroy(), 2000).unref();
}

const reply = (res: http.ServerResponse, status: number, body: unknown): void => {
  if (res.headersSent) return;
  res.shouldKeepAlive = false;
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' }).end(JSON.stringify(body));
};

/** The request's action and parameters, or why they are refused (every bound checked, nothing trusted). */
export function parseOperatorRequest(method: string | undefined, rawUrl: string | undefined, headers: http.IncomingHttpHeaders): { action: string; params: URLSearchParams; onBehalfOf: string | null } | { status: number; message: string } {
  const d = OPERATOR_LISTEN_DEFAULTS;
  if (method !== 'POST') return { status: 405, message: 'operator actions are POST /<action>?<parameters>' };
  const url = rawUrl ?? '';
  if (Buffer.byteLength(url) > d.maxUrlBytes) return { status: 414, message: `a request line longer than ${d.maxUrlBytes} bytes` };
  if (headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0')) {
    return { status: 413, message: 'operator requests carry no body: parameters go in the query' };
  }
  const q = url.indexOf('?');
  const pathPart = q < 0 ? url : url.slice(0, q);
  const action = pathPart.startsWith('/') ? pathPart.slice(1) : '';
  if (!ACTION_RE.test(action)) return { status: 400, message: 'the action must be a word of a-z, 0-9 and - (at most 64 characters)' };
  let params: URLSearchParams;
  try {
    params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  } catch {
    return { status: 400, message: 'the parameters are not a query string' };
  }
  const seen = new Set<string>();
  for (const [k, v] of params) {
    if (seen.size >= d.maxParams) return { status: 400, message: `more than ${d.maxParams} parameters` };
    if (!KEY_RE.test(k)) return { status: 400, message: 'a parameter name must be a word of A-Z a-z 0-9 _ - (at most 64 characters)' };
    if (seen.has(k)) return { status: 400, message: `parameter "${k}" is given twice` };
    if (Buffer.byteLength(v) > d.maxValueBytes || v.includes('\0')) return { status: 400, message: `parameter "${k}" is longer than ${d.maxValueBytes} bytes or holds a NUL` };
    seen.add(k);
  }
  const who = headers[ON_BEHALF_HEADER];
  if (who !== undefined && (typeof who !== 'string' || !USER_RE.test(who))) return { status: 400, message: `${ON_BEHALF_HEADER}: 1-64 characters of A-Z a-z 0-9 . _ @ -` };
  return { action, params, onBehalfOf: who ?? null };
}

export async function startOperatorListener(o: OperatorListenOptions): Promise<OperatorListener> {
  const d = OPERATOR_LISTEN_DEFAULTS;
  const callers = new WeakMap<object, RemoteCaller>();
  const clients = o.clients ? new Set(o.clients) : null;
  const open = new Set<tls.TLSSocket>();
  const http1 = http.createServer({ maxHeaderSize: d.maxHeadBytes }, (req, res) => {
    const caller = callers.get(req.socket);
    // Only sockets that passed every check are handed to this server; this is a second lock on the door.
    if (!caller || o.trust.isRevoked(caller.serial)) {
      reply(res, 403, { code: 'TM_ERR_PEER_REFUSED', message: 'not an authenticated operator connection' });
      return;
    }
    const parsed = parseOperatorRequest(req.method, req.url, req.headers);
    if ('status' in parsed) {
      o.log.warn({ peer: caller.name, address: caller.address, code: 'TM_ERR_USAGE', err: parsed.message }, 'operator request refused');
      reply(res, parsed.status, { code: 'TM_ERR_USAGE', message: parsed.message });
      return;
    }
    const { action, params, onBehalfOf } = parsed;
    if (o.read && (READ_ACTIONS as readonly string[]).includes(action)) {
      o.log.debug({ action, peer: caller.name, address: caller.address }, 'status read (remote)');
      const read = o.read;
      const answer = action === 'status' ? Promise.resolve(read.status()) : read.metrics ? read.metrics.render().then((text) => ({ contentType: read.metrics!.contentType, text })) : Promise.resolve({ contentType: 'text/plain', text: '' });
      answer.then((out) => reply(res, 200, out ?? {}), (e: unknown) => reply(res, 500, { code: codeOf(e), message: (e as Error)?.message ?? String(e) }));
      return;
    }
    const who = { action, peer: caller.name, role: caller.role, serial: caller.serial, address: caller.address, onBehalfOf, params: Object.fromEntries([...params].map(([k, v]) => [k, v.slice(0, 256)])) };
    o.log.info(who, 'operator action (remote)');
    o.act(action, params, { ...caller, onBehalfOf }).then(
      (out) => reply(res, 200, out ?? {}),
      (e: unknown) => {
        const code = codeOf(e);
        o.log.warn({ ...who, code, err: (e as Error)?.message ?? String(e) }, 'operator action failed');
        reply(res, 400, { code, message: (e as Error)?.message ?? String(e) });
      },
    );
  });
  // Actions may run long (a recovery); the head must come at once and the connection serves one request.
  http1.requestTimeout = 0;
  http1.keepAliveTimeout = 1;
  http1.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    if (socket.writable) socket.end(`HTTP/1.1 ${status} Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify({ code: 'TM_ERR_USAGE', message: `malformed request (${err.code ?? err.message})` })}`);
    socket.destroy();
  });

  const listener = await TlsListener.listen({
    host: o.host, port: o.port, trust: o.trust, allowed: ROLES, log: o.log.child({ component: 'operator-listener' }),
    limits: { ...d.limits, ...o.limits },
    clientCertOptional: true,
    refused: (socket, code, message) => refuseInBand(socket, 403, code, message),
    onPeer: (socket: tls.TLSSocket, peer: Peer) => {
      const address = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
      let why: string | null = null;
      if (!OPERATOR_ROLES.includes(peer.role)) why = `certificate '${peer.name}' has role '${peer.role}'; operator actions need a certificate of role ${OPERATOR_ROLES.join(' or ')}`;
      else if (clients && !clients.has(peer.name)) why = `certificate '${peer.name}' (${peer.role}) is not among this daemon's operatorListen.clients`;
      if (why) {
        listener.refusals.refused('TM_ERR_FORBIDDEN', address, why);
        refuseInBand(socket, 403, 'TM_ERR_FORBIDDEN', why);
        return;
      }
      // A hard deadline for the request head: a trickle of header bytes must not hold the connection.
      const timer = setTimeout(() => socket.destroy(), d.requestHeadMs);
      timer.unref();
      open.add(socket);
      socket.once('close', () => {
        clearTimeout(timer);
        open.delete(socket);
      });
      socket.once('tidemark-request', () => clearTimeout(timer));
      callers.set(socket, { name: peer.name, role: peer.role, serial: peer.serial, address, onBehalfOf: null });
      http1.emit('connection', socket);
    },
  });
  http1.on('request', (req: http.IncomingMessage) => req.socket.emit('tidemark-request'));
  if (o.stateDir !== undefined) await writeFileDurable(path.join(o.stateDir, OPERATOR_PORT_FILE), String(listener.port));
  let closed: Promise<void> | null = null;
  return {
    port: listener.port,
    close: () => (closed ??= (async () => {
      await listener.close();
      for (const s of open) s.destroy();
      if (o.stateDir !== undefined) await fsp.rm(path.join(o.stateDir, OPERATOR_PORT_FILE), { force: true });
    })()),
  };
}
