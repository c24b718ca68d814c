// What each of the three daemons does around its own work (agent/agent.ts, process-server/server.ts,
// master-target/server.ts): check that its certificate is for its role, hold its state (or cache) folder
// alone (state-lock.ts), listen for its peers over mutual TLS (tls-listener.ts), answer GET /status and
// /metrics (status-server.ts), take operator actions (operator-socket.ts, operator-listener.ts), and stop
// all of that, around the daemon's own stopping, in one order. The daemon keeps only what is its own.
import type tls from 'node:tls';
import type { z } from 'zod';
import type { connectionsSchema, operatorListenSchema } from './config.js';
import { DEFAULTS } from './defaults.js';
import { tmError } from './errors.js';
import type { Logger } from './log.js';
import { PeerTrust, type TrustPaths } from './peer-trust.js';
import type { Role } from './pki.js';
import { startOperatorListener, type OperatorListener } from './operator-listener.js';
import { startOperatorSocket, type OperatorSocket } from './operator-socket.js';
import { lockStateDir, type StateLock } from './state-lock.js';
import { startStatusServer, type MetricsSource, type StatusServer } from './status-server.js';
import { TlsListener } from './tls-listener.js';
import type { Peer } from './tls.js';

export type DaemonRole = 'agent' | 'process-server' | 'master-target';

/** How the daemon names itself: in a refusal to share its folder ("… needs it alone") and its log. */
const NAMES: Record<DaemonRole, { a: string; the: string }> = {
  agent: { a: 'an agent', the: 'agent' },
  'process-server': { a: 'a process server', the: 'process server' },
  'master-target': { a: 'a master target', the: 'master target' },
};

/** A peer's session on the daemon's port: over when `done` settles, cut short by `destroy()` at close. */
export interface PeerSession {
  readonly peerLabel: string;
  destroy(): void;
}

export type OperatorAct = (action: string, params: URLSearchParams) => Promise<unknown>;

/** How long close waits for cut sessions to end (their in-flight commits) before stopping the daemon's parts. */
const SESSION_END_WAIT_MS = 30_000;

export class DaemonShell<S extends PeerSession = PeerSession> {
  private trustOf: PeerTrust | null = null;
  private lock: StateLock | null = null;
  private dir = '';
  private listener: TlsListener | null = null;
  private status: StatusServer | null = null;
  private operator: OperatorSocket | null = null;
  private operatorRemote: OperatorListener | null = null;
  /** The peers connected now. */
  readonly sessions = new Set<S>();
  /** Their sessions' ends: a receiver's end includes committing what it read (proto/receiver.ts). */
  private readonly ends = new Set<Promise<unknown>>();
  private closing: Promise<void> | null = null;

  constructor(readonly role: DaemonRole, private readonly log: Logger) {}

  /**
   * Who this daemon is, and that it is alone: its certificate (`certPath`, for the message) must be for
   * its role, and it takes the lock on `stateDir` (created if missing) for its whole life, before anything
   * reads the state there: a second daemon on one folder would number, send, apply or delete what the
   * first holds. The status and operator endpoints live in the same folder.
   */
  async start(o: { trust: TrustPaths; certPath: string; stateDir: string }): Promise<PeerTrust> {
    const trust = await PeerTrust.open(o.trust, this.log.child({ component: 'trust' }));
    try {
      if (trust.identity.role !== this.role) throw tmError('TM_ERR_PKI', `certificate ${o.certPath} is for a ${trust.identity.role}, not ${NAMES[this.role].a}`);
      this.lock = await lockStateDir(o.stateDir, NAMES[this.role].a);
    } catch (e) {
      trust.close();
      throw e;
    }
    this.trustOf = trust;
    this.dir = o.stateDir;
    return trust;
  }

  /** close() was called: start nothing new. */
  get stopping(): boolean {
    return this.closing !== null;
  }

  get trust(): PeerTrust {
    if (!this.trustOf) throw tmError('TM_ERR_CLOSED', `the ${NAMES[this.role].the} is not started`);
    return this.trustOf;
  }

  /**
   * Accept the `allowed` roles on `listen`, within `connections`; `serve` runs each peer's session.
   * Returns the port bound.
   */
  async listen(o: {
    listen: { host: string; port: number };
    connections: z.infer<typeof connectionsSchema>;
    allowed: readonly Role[];
    serve: (socket: tls.TLSSocket, peer: Peer) => { session: S; done: Promise<unknown> };
  }): Promise<number> {
    const c = o.connections;
    this.listener = await TlsListener.listen({
      host: o.listen.host, port: o.listen.port, trust: this.trust, allowed: o.allowed, log: this.log.child({ component: 'listener' }),
      limits: { handshakeTimeoutMs: c.handshakeTimeoutMs, maxConnections: c.max, maxPerAddress: c.perAddress },
      onPeer: (socket, peer) => {
        const { session, done } = o.serve(socket, peer);
        this.sessions.add(session);
        const end = done.finally(() => {
          this.sessions.delete(session);
          this.ends.delete(end);
        });
        this.ends.add(end);
        void end.catch(() => {});
      },
    });
    return this.listener.port;
  }

  /** GET /status and /metrics on the loopback `port`, recorded in the state folder. Returns the port bound. */
  async serveStatus(port: number, snapshot: () => unknown, metrics: MetricsSource): Promise<number> {
    this.status = await startStatusServer(DEFAULTS.statusHost, port, this.dir, snapshot, metrics);
    return this.status.port;
  }

  /**
   * Operator actions: on the root-only socket in the state folder, and on the remote port if configured,
   * which also answers status reads (`read`: the same snapshot and metrics as the status server).
   */
  async serveOperators(act: OperatorAct, remote: z.infer<typeof operatorListenSchema>, read: { status: () => unknown; metrics?: MetricsSource }): Promise<void> {
    const log = this.log.child({ component: 'operator' });
    this.operator = await startOperatorSocket(this.dir, (action, params) => act(action, params), log);
    if (remote) {
      this.operatorRemote = await startOperatorListener({
        host: remote.host, port: remote.port, trust: this.trust, clients: remote.clients, act: (action, params) => act(action, params), log, read,
        stateDir: this.dir, limits: { handshakeTimeoutMs: remote.handshakeTimeoutMs, maxConnections: remote.maxConnections, maxPerAddress: remote.maxPerAddress },
      });
    }
  }

  /**
   * Status reads only, for a daemon that takes no operator actions (the process server): the remote port
   * if configured, answering `status` and `metrics` (`read`) with the same certificate checks as
   * serveOperators, and refusing every other action. No local operator socket.
   */
  async serveReads(remote: z.infer<typeof operatorListenSchema>, read: { status: () => unknown; metrics?: MetricsSource }): Promise<void> {
    if (!remote) return;
    const none: OperatorAct = (action) => Promise.reject(tmError('TM_ERR_USAGE', `unknown action "${action}": ${NAMES[this.role].a} takes no operator actions; its operator port answers status and metrics only`));
    this.operatorRemote = await startOperatorListener({
      host: remote.host, port: remote.port, trust: this.trust, clients: remote.clients, act: none, log: this.log.child({ component: 'operator' }), read,
      stateDir: this.dir, limits: { handshakeTimeoutMs: remote.handshakeTimeoutMs, maxConnections: remote.maxConnections, maxPerAddress: remote.maxPerAddress },
    });
  }

  /**
   * Stop, once (later calls wait for the first): no new operator action, no new peer and the connected
   * ones cut, then the daemon's own `stop`, then certificates, status and the folder's lock. Safe after
   * an open that failed part way.
   */
  close(stop: () => Promise<void>): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.operator?.close();
        await this.operatorRemote?.close();
        const closed = this.listener?.close();
        for (const s of this.sessions) s.destroy();
        await closed;
        // Cut sessions end at once, except for commits of what they had read: those finish before the
        // daemon's own parts (the cache, the volumes) close under them. Bounded, should a disk hang.
        await Promise.race([Promise.allSettled([...this.ends]), new Promise((r) => setTimeout(r, SESSION_END_WAIT_MS).unref())]);
        await stop();
      } finally {
        this.trustOf?.close();
        await this.status?.close();
        await this.lock?.release();
      }
      this.log.info(`${NAMES[this.role].the} stopped`);
    })();
    return this.closing;
  }
}
