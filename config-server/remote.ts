// The configuration server's side of a daemon's remote operator port (common/operator-listener.ts): one
// mutual-TLS connection per action, this server's certificate (role config-server) as the client's, the
// daemon's pinned to the name and role the configuration gives it and checked against the CRL; the
// logged-in website user travels in a header the daemon logs. docs/SECURITY.md, "Remote operator port".
import http from 'node:http';
import type tls from 'node:tls';
import { ERRORS, tmError, wrap, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { ON_BEHALF_HEADER } from '../common/operator-listener.js';
import { PeerTrust, trustPaths } from '../common/peer-trust.js';
import type { Role } from '../common/pki.js';
import { connectTls } from '../common/tls.js';
import { csPath, type ConfigServerConfig, type DaemonEntry } from './config.js';

/** An answer is JSON of a few KiB (a test-failover list may hold many entries); more is refused. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/**
 * Send one operator request over an established TLS socket and read its answer; the daemon's error comes
 * back with its code. The socket is closed afterwards (one request per connection).
 */
export function requestOver(socket: tls.TLSSocket, where: string, action: string, params: URLSearchParams, opts: { onBehalfOf?: string; timeoutMs: number }): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (e: Error | null, v?: Record<string, unknown>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (e) reject(e);
      else resolve(v!);
    };
    const timer = setTimeout(() => done(tmError('TM_ERR_CONNECTION', `no answer from ${where} in ${opts.timeoutMs} ms`)), opts.timeoutMs);
    const headers: Record<string, string> = { 'content-length': '0' };
    if (opts.onBehalfOf) headers[ON_BEHALF_HEADER] = opts.onBehalfOf;
    const req = http.request({ createConnection: () => socket, path: `/${action}?${params}`, method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER_BYTES) done(tmError('TM_ERR_PROTOCOL', `${where} answered more than ${MAX_ANSWER_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('error', (e) => done(wrap(e, `read the answer of ${where}`)));
      res.on('end', () => {
        let out: Record<string, unknown>;
        try {
          const v = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as unknown;
          if (typeof v !== 'object' || v === null) throw new Error('not an object');
          out = v as Record<string, unknown>;
        } catch {
          done(tmError('TM_ERR_PROTOCOL', `${where} answered ${res.statusCode} with something that is not JSON`));
          return;
        }
        if (res.statusCode === 200) done(null, out);
        else done(tmError(typeof out.code === 'string' && out.code in ERRORS ? (out.code as ErrorCode) : 'TM_ERR_IO', `${where}: ${String(out.message ?? `HTTP ${res.statusCode}`)}`));
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      // A TLS alert from the daemon (it refused our certificate during the handshake) or a dropped line.
      if (/alert|certificate/i.test(e.message)) done(tmError('TM_ERR_PEER_REFUSED', `${where} refused this server's certificate: ${e.message}`, { peer: where }));
      else done(tmError('TM_ERR_CONNECTION', `${where}: ${e.message}${e.code ? ` (${e.code})` : ''}`, { peer: where }, e));
    });
    req.end();
  });
}

export class RemoteOperator {
  private constructor(private readonly trust: PeerTrust) {}

  /** The server's identity for daemons' operator ports: its certificate, key, the CA and the CRL. */
  static async open(cfg: ConfigServerConfig, log: Logger): Promise<RemoteOperator> {
    if (cfg.tls.ca === undefined) throw tmError('TM_ERR_CONFIG_INVALID', 'remote operator ports need tls.ca in the configuration server\'s config', { key: 'tls.ca' });
    const trust = await PeerTrust.open(trustPaths({ ca: cfg.tls.ca, cert: cfg.tls.cert, key: cfg.tls.key, crl: cfg.tls.crl }, (p) => csPath(cfg, p)), log);
    if (trust.identity.role !== 'config-server' && trust.identity.role !== 'operator') {
      trust.close();
      throw tmError('TM_ERR_PKI', `certificate ${cfg.tls.cert} is for a ${trust.identity.role}; a daemon's operator port takes a config-server (or operator) certificate`);
    }
    return new RemoteOperator(trust);
  }

  /** Ask daemon `d` (which has `remote`) for `action`, as the website user `onBehalfOf`. */
  async ask(d: DaemonEntry, action: string, params: URLSearchParams, opts: { onBehalfOf?: string; timeoutMs: number }): Promise<Record<string, unknown>> {
    const { host, port } = d.remote!;
    const where = `${d.role} ${d.name} at ${host}:${port}`;
    const { socket } = await connectTls(host, port, this.trust, { role: d.role as Role, name: d.name }, Math.min(opts.timeoutMs, 30_000));
    return requestOver(socket, where, action, params, opts);
  }

  close(): void {
    this.trust.close();
  }
}
