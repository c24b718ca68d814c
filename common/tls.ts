// TLS 1.3 with mutual certificates from our CA. Peers are addressed by IP and names drift, so we
// authenticate by "signed by our CA + has the right role (OU)", never by hostname.

import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmError, wrap } from './errors.js';
import { isRole, type Identity, type Role } from './pki.js';

export interface Peer {
  name: string;
  role: Role;
}

// Node gives an array when a subject repeats an attribute; a cert with two OUs has no single
// role, so anything but one string is treated as absent.
function single(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export function serverOptions(id: Identity): tls.TlsOptions {
  return {
    ca: id.ca,
    cert: id.cert,
    key: id.key,
    // Clients without a cert from our CA fail the handshake; the role is checked afterwards by
    // the service (peerIdentity + requireRole) because which roles may connect varies per port.
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  };
}

export function clientOptions(id: Identity, expectedRole: Role): tls.ConnectionOptions {
  return {
    ca: id.ca,
    cert: id.cert,
    key: id.key,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    // Node calls this only after the chain verified against `ca`, and skips it on a resumed
    // session, so callers must not pass `session`. Returning an Error makes Node destroy the
    // socket with it, so the 'error' event carries our TM_ERR_PEER_REFUSED.
    checkServerIdentity: (_host: string, cert: tls.PeerCertificate): Error | undefined => {
      const role = single(cert.subject?.OU);
      if (role === expectedRole) return undefined;
      const name = single(cert.subject?.CN) ?? '(no CN)';
      return tmError(
        'TM_ERR_PEER_REFUSED',
        `server '${name}' has role '${role ?? '(none)'}', expected '${expectedRole}'`,
        { peer: name, expected: expectedRole, role },
      );
    },
  };
}

/** Name and role of the authenticated peer on either end of a connection. */
export function peerIdentity(socket: tls.TLSSocket): Peer {
  const where = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  if (!socket.authorized) {
    // Typed as Error by @types/node, but at runtime it is usually an OpenSSL code string.
    const why = socket.authorizationError === undefined ? 'no certificate' : String(socket.authorizationError);
    throw tmError('TM_ERR_PEER_REFUSED', `peer ${where} is not authorized: ${why}`, { peer: where });
  }
  const subject = socket.getPeerCertificate().subject as unknown as Record<string, unknown> | undefined;
  const name = single(subject?.['CN']);
  const role = single(subject?.['OU']);
  if (name === undefined || !isRole(role)) {
    throw tmError('TM_ERR_PEER_REFUSED', `peer ${where} certificate has no name or no known role (OU=${String(role)})`, {
      peer: name ?? where,
    });
  }
  return { name, role };
}

/** Throws unless the peer's role is one of `allowed`; returns the peer for chaining. */
export function requireRole(peer: Peer, allowed: readonly Role[]): Peer {
  if (!allowed.includes(peer.role)) {
    throw tmError('TM_ERR_PEER_REFUSED', `peer '${peer.name}' has role '${peer.role}'; only ${allowed.join(' or ')} may connect here`, {
      peer: peer.name,
      role: peer.role,
    });
  }
  return peer;
}

/** Connect with mutual TLS; resolves once the server's chain and role are verified. */
export function connectTls(host: string, port: number, id: Identity, role: Role): Promise<{ socket: tls.TLSSocket; peerName: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ...clientOptions(id, role) });
    socket.setNoDelay(true);
    const fail = (e: Error): void => reject(wrap(e, `connect to ${role} at ${host}:${port}`, { peer: `${host}:${port}` }));
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      socket.off('error', fail);
      resolve({ socket, peerName: single(socket.getPeerCertificate().subject?.CN) ?? `${host}:${port}` });
    });
  });
}

/**
 * Listen with mutual TLS. Each connection is handed over with its verified peer; a peer with the wrong
 * role is logged through `onRefused` and dropped before it can send anything.
 */
export async function listenTls(
  host: string,
  port: number,
  id: Identity,
  allowed: readonly Role[],
  onPeer: (socket: tls.TLSSocket, peer: Peer) => void,
  onRefused: (err: Error, where: string) => void,
): Promise<{ server: tls.Server; port: number }> {
  const server = tls.createServer(serverOptions(id), (socket) => {
    socket.setNoDelay(true);
    let peer: Peer;
    try {
      peer = requireRole(peerIdentity(socket), allowed);
    } catch (e) {
      onRefused(e as Error, `${socket.remoteAddress}:${socket.remotePort}`);
      socket.destroy();
      return;
    }
    onPeer(socket, peer);
  });
  // Handshake failures (a certificate from another CA, no certificate) never reach the handler above.
  server.on('tlsClientError', (err, socket) => {
    const why = (socket as tls.TLSSocket).authorizationError;
    onRefused(tmError('TM_ERR_PEER_REFUSED', `TLS handshake refused: ${why == null ? err.message : String(why)}`), `${socket.remoteAddress}:${socket.remotePort}`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, port: (server.address() as AddressInfo).port };
}
