// The mutual-TLS listener every daemon port uses. Anyone who can reach the port can open connections, so
// nothing they do may hold resources for long or flood the log: a handshake has a hard deadline, a
// failed one is destroyed at once, connections are capped in total and per remote address, and
// refusals are logged at a bounded rate, each with the address it really came from.
import type net from 'node:net';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { DEFAULTS } from './defaults.js';
import { codeOf, tmError, type ErrorCode } from './errors.js';
import type { Logger } from './log.js';
import type { PeerTrust } from './peer-trust.js';
import type { Role } from './pki.js';
import { RefusalLog } from './refusal-log.js';
import { peerIdentity, requireRole, serverOptions, type Peer } from './tls.js';

export interface ListenerLimits {
  /** From TCP accept to a verified TLS session; past it the connection is destroyed. */
  handshakeTimeoutMs: number;
  /** Open connections (handshaking or established); more are closed as they arrive. */
  maxConnections: number;
  /** Open connections from one remote address. */
  maxPerAddress: number;
}

export interface ListenOptions {
  host: string;
  port: number;
  trust: PeerTrust;
  /** Roles that may connect to this port at all; which volumes each may send is the service's business. */
  allowed: readonly Role[];
  onPeer: (socket: tls.TLSSocket, peer: Peer) => void;
  log: Logger;
  limits?: Partial<ListenerLimits>;
  /**
   * Complete the handshake with a client that sends no certificate or one that does not verify, so the
   * service can tell it why in its own protocol (refused below): the operator port answers HTTP with a
   * code. Such a peer is still refused; only the way it learns so changes.
   */
  clientCertOptional?: boolean;
  /** Called instead of destroying a refused peer's socket after the handshake; it must end the socket. */
  refused?: (socket: tls.TLSSocket, code: ErrorCode, message: string) => void;
}

interface Pending { address: string; timer: NodeJS.Timeout; raw: net.Socket }

export class TlsListener {
  readonly refusals: RefusalLog;
  private readonly limits: ListenerLimits;
  private readonly server: tls.Server;
  /** Accepted TCP connections still in their handshake, by "address:port". */
  private readonly pending = new Map<string, Pending>();
  /** Open connections per remote address (without port). */
  private readonly perAddress = new Map<string, number>();
  /** Raw sockets refused at accept: their handshake error is already accounted for. */
  private readonly refusedRaw = new WeakSet<net.Socket>();
  private readonly unsubscribe: () => void;
  private closing: Promise<void> | null = null;
  port = 0;

  private constructor(private readonly o: ListenOptions) {
    this.limits = { ...DEFAULTS.listener, ...o.limits };
    this.refusals = new RefusalLog(o.log);
    this.server = tls.createServer({ ...serverOptions(o.trust.identity), handshakeTimeout: this.limits.handshakeTimeoutMs, ...(o.clientCertOptional ? { rejectUnauthorized: false } : {}) });
    this.server.maxConnections = this.limits.maxConnections;
    // Ahead of Node's own listener, so the address is read while the socket still has it.
    this.server.prependListener('connection', (raw: net.Socket) => this.accepted(raw));
    this.server.on('drop', (d?: { remoteAddress?: string; remotePort?: number }) => {
      this.refusals.refused('TM_ERR_PEER_REFUSED', `${d?.remoteAddress ?? '?'}:${d?.remotePort ?? '?'}`, `too many connections (${this.limits.maxConnections})`);
    });
    this.server.on('secureConnection', (socket: tls.TLSSocket) => this.secured(socket));
    // Node reports a failed or timed-out handshake here and, with a listener, leaves the socket open:
    // it must be destroyed, or every idle or garbage connection holds a file descriptor for good.
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.handshakeFailed(err, socket));
    this.unsubscribe = o.trust.onReload((id) => this.server.setSecureContext(serverOptions(id)));
  }

  static async listen(o: ListenOptions): Promise<TlsListener> {
    const l = new TlsListener(o);
    await new Promise<void>((resolve, reject) => {
      l.server.once('error', reject);
      l.server.listen(o.port, o.host, () => {
        l.server.off('error', reject);
        resolve();
      });
    });
    l.port = (l.server.address() as AddressInfo).port;
    return l;
  }

  private accepted(raw: net.Socket): void {
    const address = raw.remoteAddress ?? '?';
    const where = `${address}:${raw.remotePort ?? '?'}`;
    const n = (this.perAddress.get(address) ?? 0) + 1;
    this.perAddress.set(address, n);
    raw.once('close', () => {
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
      const p = this.pending.get(where);
      if (p?.raw === raw) {
        clearTimeout(p.timer);
        this.pending.delete(where);
      }
    });
    if (n > this.limits.maxPerAddress) {
      this.refusedRaw.add(raw);
      this.refusals.refused('TM_ERR_PEER_REFUSED', where, `too many connections from ${address} (${this.limits.maxPerAddress})`);
      raw.destroy();
      return;
    }
    // A hard deadline: Node's handshakeTimeout restarts on every byte, so a slow trickle would evade it.
    const timer = setTimeout(() => {
      this.refusals.refused('TM_ERR_PEER_REFUSED', where, `no TLS session within ${this.limits.handshakeTimeoutMs} ms`);
      this.refusedRaw.add(raw);
      raw.destroy();
    }, this.limits.handshakeTimeoutMs);
    timer.unref();
    this.pending.set(where, { address, timer, raw });
  }

  /** The "address:port" of a TLS socket, also after Node has detached it from its TCP socket. */
  private whereOf(socket: tls.TLSSocket): { where: string; raw: net.Socket | undefined } {
    const parent = (socket as unknown as { _parent?: net.Socket })._parent;
    if (socket.remoteAddress !== undefined) {
      const where = `${socket.remoteAddress}:${socket.remotePort}`;
      return { where, raw: this.pending.get(where)?.raw ?? parent };
    }
    for (const [where, p] of this.pending) if (p.raw === parent) return { where, raw: parent };
    return { where: parent?.remoteAddress !== undefined ? `${parent.remoteAddress}:${parent.remotePort}` : 'unknown address', raw: parent };
  }

  private secured(socket: tls.TLSSocket): void {
    const { where } = this.whereOf(socket);
    const p = this.pending.get(where);
    if (p) {
      clearTimeout(p.timer);
      this.pending.delete(where);
    }
    socket.setNoDelay(true);
    let peer: Peer;
    try {
      peer = requireRole(peerIdentity(socket, where), this.o.allowed);
      if (this.o.trust.isRevoked(peer.serial)) {
        throw tmError('TM_ERR_PEER_REFUSED', `peer '${peer.name}' presents a revoked certificate (serial ${peer.serial})`, { peer: peer.name });
      }
    } catch (e) {
      this.refusals.refused(codeOf(e), where, (e as Error).message);
      if (this.o.refused) this.o.refused(socket, codeOf(e), (e as Error).message);
      else socket.destroy();
      return;
    }
    this.o.trust.track(socket, peer.serial, peer.name);
    this.o.onPeer(socket, peer);
  }

  private handshakeFailed(err: Error, socket: tls.TLSSocket): void {
    const { where, raw } = this.whereOf(socket);
    socket.destroy();
    if (raw && this.refusedRaw.has(raw)) return; // already logged when it was refused
    const why = socket.authorizationError;
    this.refusals.refused('TM_ERR_PEER_REFUSED', where, `TLS handshake refused: ${why == null ? err.message : String(why)}`);
  }

  /** Connections in their handshake now (for tests and status). */
  get handshaking(): number {
    return this.pending.size;
  }

  /** Stop accepting; connections still handshaking are destroyed, established ones are the owner's. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.unsubscribe();
      this.server.close(() => resolve());
      for (const p of this.pending.values()) p.raw.destroy();
      this.refusals.close();
    });
    return this.closing;
  }
}
