// TLS 1.3 with mutual certificates from our CA. Peers are addressed by IP and host names drift, so we
// authenticate by certificate, never by hostname: signed by our CA, not revoked, the right role (OU) and,
// for the volumes it sends or the server a client expects, the certificate name (CN) the config names.

import tls from 'node:tls';
import { tmError, wrap } from './errors.js';
import type { PeerTrust } from './peer-trust.js';
import { isRole, nodeCert, type Identity, type Role } from './pki.js';

export interface Peer {
  name: string;
  role: Role;
  /** Certificate serial (lower-case hex), checked against the CA's revocation list. */
  serial: string;
}

/** Who a client expects at the other end: the role, and the certificate name pinned in its config. */
export interface ExpectedPeer {
  role: Role;
  name: string;
}

/** Bound on a TCP connect plus TLS handshake to a peer; past it the attempt fails and is retried. */
export const CONNECT_TIMEOUT_MS = 30_000;

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
    // Clients without a cert from our CA fail the handshake; the role, name and revocation are checked
    // afterwards by the service (peerIdentity + requireRole), because which peers may connect varies.
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  };
}

export function clientOptions(id: Identity, expected: ExpectedPeer, isRevoked: (serial: string) => boolean = () => false): tls.ConnectionOptions {
  return {
    ca: id.ca,
    cert: id.cert,
    key: id.key,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    // Node calls this only after the chain verified against `ca`, and skips it on a resumed
    // session, so callers must not pass `session`. Returning an Error makes Node destroy the
    // socket with it, so the 'error' event carries our TM_ERR_PEER_REFUSED. Any certificate of the
    // right role is not enough: the server must be the one named in our configuration.
    checkServerIdentity: (_host: string, cert: tls.PeerCertificate): Error | undefined => {
      const role = single(cert.subject?.OU);
      const name = single(cert.subject?.CN) ?? '(no CN)';
      if (role !== expected.role || name !== expected.name) {
        return tmError(
          'TM_ERR_PEER_REFUSED',
          `server is '${name}' (${role ?? 'no role'}), expected '${expected.name}' (${expected.role})`,
          { peer: name, expected: expected.name, role },
        );
      }
      if (isRevoked(cert.serialNumber)) {
        return tmError('TM_ERR_PEER_REFUSED', `server '${name}' presents a revoked certificate (serial ${cert.serialNumber.toLowerCase()})`, { peer: name });
      }
      return undefined;
    },
  };
}

/** Name, role and serial of the authenticated peer on either end of a connection. */
export function peerIdentity(socket: tls.TLSSocket, where = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`): Peer {
  if (!socket.authorized) {
    // Typed as Error by @types/node, but at runtime it is usually an OpenSSL code string.
    // With the client certificate optional (the operator port), a peer that sent none is told so plainly.
    const none = Object.keys(socket.getPeerCertificate() ?? {}).length === 0;
    const why = none || socket.authorizationError === undefined ? 'no certificate' : String(socket.authorizationError);
    throw tmError('TM_ERR_PEER_REFUSED', `peer ${where} is not authorized: ${why}`, { peer: where });
  }
  const cert = socket.getPeerCertificate();
  const subject = cert.subject as unknown as Record<string, unknown> | undefined;
  const name = single(subject?.['CN']);
  const role = single(subject?.['OU']);
  if (name === undefined || !isRole(role)) {
    throw tmError('TM_ERR_PEER_REFUSED', `peer ${where} certificate has no name or no known role (OU=${String(role)})`, {
      peer: name ?? where,
    });
  }
  return { name, role, serial: String(cert.serialNumber ?? '').toLowerCase() };
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

/**
 * Connect with mutual TLS; resolves once the server's chain, role, pinned name and revocation status
 * are verified. The connection is then watched by `trust`: revoking the server's certificate drops it.
 */
export function connectTls(host: string, port: number, trust: PeerTrust, expected: ExpectedPeer, timeoutMs = CONNECT_TIMEOUT_MS): Promise<{ socket: tls.TLSSocket; peerName: string }> {
  // The server refuses an expired client certificate with a TLS alert the client may only see as the
  // connection closing: say so here, where the cause is known.
  const own = ownCertificateProblem(trust.identity);
  if (own) return Promise.reject(tmError('TM_ERR_PKI', `not connecting to ${expected.role} ${expected.name} at ${host}:${port}: ${own}`, { peer: `${host}:${port}` }));
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ...clientOptions(trust.identity, expected, (s) => trust.isRevoked(s)) });
    socket.setNoDelay(true);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      reject(wrap(e, `connect to ${expected.role} ${expected.name} at ${host}:${port}`, { peer: `${host}:${port}` }));
    };
    // A peer that accepts TCP but never finishes the handshake must not hold the sender forever.
    const timer = setTimeout(() => socket.destroy(tmError('TM_ERR_CONNECTION', `no TLS session within ${timeoutMs} ms`)), timeoutMs);
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', fail);
      const cert = socket.getPeerCertificate();
      trust.track(socket, String(cert.serialNumber ?? ''), expected.name);
      resolve({ socket, peerName: single(cert.subject?.CN) ?? `${host}:${port}` });
    });
  });
}

/** Why this daemon's own certificate cannot be accepted by a peer now (expired, not yet valid), or null. */
export function ownCertificateProblem(id: Identity, now = new Date()): string | null {
  const c = nodeCert(id.cert, 'own certificate');
  // Node 20 gives the dates only as OpenSSL prints them ("Dec  6 04:43:52 2028 GMT"), which Date reads.
  const notAfter = new Date(c.validTo);
  const notBefore = new Date(c.validFrom);
  if (Number.isNaN(notAfter.getTime()) || Number.isNaN(notBefore.getTime())) {
    return `this ${id.role}'s certificate (${id.name}) has validity dates that cannot be read (from '${c.validFrom}' to '${c.validTo}'): issue a new one (tidemark pki issue ${id.role} ${id.name})`;
  }
  if (notAfter < now) return `this ${id.role}'s certificate (${id.name}) expired at ${notAfter.toISOString()}; peers refuse it: issue a new one (tidemark pki issue ${id.role} ${id.name}) and put it in place (it is reloaded without a restart)`;
  if (notBefore > now) return `this ${id.role}'s certificate (${id.name}) is valid only from ${notBefore.toISOString()}: is this machine's clock right?`;
  return null;
}
