// What a daemon trusts, kept current while it runs: its own identity (CA, certificate, key) and the CA's
// revocation list. The files are polled; a change is loaded (a bad file is reported and the previous
// trust kept), listeners re-key their servers (setSecureContext), and every live connection whose peer
// certificate is now revoked is dropped, so revoking a leaked key takes effect in seconds, not at the
// next restart.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type tls from 'node:tls';
import { codeOf } from './errors.js';
import { CRL_FILE, EMPTY_CRL, normalSerial, readCrl, type Crl } from './crl.js';
import type { Logger } from './log.js';
import { readIdentity, type Identity } from './pki.js';

export interface TrustPaths { ca: string; cert: string; key: string; crl: string }

/** How often the trust files are checked for a change. */
export const TRUST_POLL_MS = 2000;

/** The CRL a daemon reads when its config names none: crl.pem beside its CA certificate. */
export function defaultCrlPath(caPath: string): string {
  return path.join(path.dirname(caPath), CRL_FILE);
}

/** The files a daemon's `tls` config names, resolved with `p` (relative to the config's folder). */
export function trustPaths(t: { ca: string; cert: string; key: string; crl?: string }, p: (x: string) => string): TrustPaths {
  return { ca: p(t.ca), cert: p(t.cert), key: p(t.key), crl: t.crl === undefined ? defaultCrlPath(p(t.ca)) : p(t.crl) };
}

async function fingerprint(paths: TrustPaths): Promise<string> {
  const parts = await Promise.all(Object.values(paths).map((p) => fsp.stat(p).then((s) => `${s.ino}:${s.size}:${s.mtimeMs}`, () => '-')));
  return parts.join('|');
}

export class PeerTrust {
  private crl: Crl = EMPTY_CRL;
  private readonly live = new Map<tls.TLSSocket, { serial: string; label: string }>();
  private readonly listeners = new Set<(id: Identity) => void>();
  private timer: NodeJS.Timeout | null = null;
  private seen = '';
  private polling: Promise<void> | null = null;

  private constructor(readonly paths: TrustPaths, public identity: Identity, private readonly log: Logger) {}

  /** Load everything once; a CRL that is present but invalid is a startup error (TM_ERR_PKI). */
  static async open(paths: TrustPaths, log: Logger): Promise<PeerTrust> {
    const seen = await fingerprint(paths);
    const id = await readIdentity(paths);
    const trust = new PeerTrust(paths, id, log);
    trust.crl = await readCrl(paths.crl, id.ca);
    trust.seen = seen;
    trust.timer = setInterval(() => void trust.poll(), TRUST_POLL_MS);
    trust.timer.unref();
    return trust;
  }

  isRevoked(serial: string): boolean {
    return this.crl.serials.has(normalSerial(serial));
  }

  get revokedCount(): number {
    return this.crl.serials.size;
  }

  /** Called with the new identity after each reload (servers install it with setSecureContext). */
  onReload(fn: (id: Identity) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Watch a connection: it is destroyed if its peer's certificate is revoked while it is open. */
  track(socket: tls.TLSSocket, serial: string, label: string): void {
    this.live.set(socket, { serial: normalSerial(serial), label });
    socket.once('close', () => this.live.delete(socket));
  }

  /** Check the files now (the timer does this every TRUST_POLL_MS). */
  poll(): Promise<void> {
    this.polling ??= this.reloadIfChanged().finally(() => { this.polling = null; });
    return this.polling;
  }

  private async reloadIfChanged(): Promise<void> {
    const now = await fingerprint(this.paths);
    if (now === this.seen) return;
    try {
      const id = await readIdentity(this.paths);
      if (id.role !== this.identity.role || id.name !== this.identity.name) {
        throw new Error(`the new certificate is ${id.name} (${id.role}), this daemon is ${this.identity.name} (${this.identity.role}); restart to change identity`);
      }
      const crl = await readCrl(this.paths.crl, id.ca);
      this.seen = now;
      this.identity = id;
      this.crl = crl;
      this.log.info({ revoked: crl.serials.size }, 'trust reloaded (certificate, CA, revocation list)');
    } catch (e) {
      // Keep the previous trust; note the fingerprint so the same bad file is reported once, not every poll.
      this.seen = now;
      this.log.error({ code: codeOf(e), err: (e as Error).message }, 'trust files changed but could not be loaded; keeping the previous ones');
      return;
    }
    for (const fn of this.listeners) fn(this.identity);
    for (const [socket, { serial, label }] of this.live) {
      if (!this.crl.serials.has(serial)) continue;
      this.log.warn({ code: 'TM_ERR_PEER_REFUSED', peer: label, serial }, 'peer certificate revoked; connection dropped');
      socket.destroy();
      this.live.delete(socket);
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
