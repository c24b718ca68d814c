// A framed, checksummed message stream over one socket (TLS in production, any Duplex in tests).
// Receiving is pull-based (`next()`), so each side reads exactly what its protocol state expects.
import type { Duplex } from 'node:stream';
import { tmError, TidemarkError, asTidemarkError, isTidemarkError } from '../common/errors.js';
import { FrameDecoder, encodeFramePrefix, type Frame } from './frame.js';
import type { Message, MessageKind } from './messages.js';

const INBOX_HIGH_WATER = 32 * 1024 * 1024;
/**
 * Between cork() and uncork(), frames are held and handed to the socket together once this many bytes
 * are held: one writev (and, under TLS, full records) for many small extents instead of one write each.
 */
export const CORK_BYTES = 256 * 1024;

export class FramedConnection {
  private readonly decoder = new FrameDecoder();
  private readonly inbox: Frame[] = [];
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | null = null;
  private failure: TidemarkError | null = null;
  private inboxBytes = 0;
  private paused = false;
  private corked = 0;
  /** Frames sent while corked, not yet handed to the socket, and their bytes. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  bytesIn = 0;
  bytesOut = 0;
  /**
   * Frames this returns true for are handed over as they arrive, ahead of the frames queued before them
   * (hash queries and their answers: docs/PROTOCOL.md §6), and never reach next().
   */
  intercept: ((f: Frame) => boolean) | null = null;

  constructor(readonly socket: Duplex, readonly peerLabel = 'peer') {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.fail(isTidemarkError(e) ? e : tmError('TM_ERR_CONNECTION', `${peerLabel}: ${e.message}`, { peer: peerLabel }, e)));
    socket.on('close', () => this.fail(tmError('TM_ERR_CONNECTION', `${peerLabel}: connection closed`, { peer: peerLabel })));
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  private onData(chunk: Buffer): void {
    // After a bad frame the stream cannot be trusted to realign: read nothing more from it.
    if (this.failure) return;
    this.bytesIn += chunk.length;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      // A corrupt stream cannot be resynchronised: say why, then drop the connection.
      const err = asTidemarkError(e);
      void this.send({ error: { code: err.code, message: err.message, volumeId: '', seq: 0, retryable: true } }).catch(() => {});
      this.fail(err);
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
      return;
    }
    for (const f of frames) {
      if (this.intercept?.(f)) continue;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w.resolve(f);
      } else {
        this.inbox.push(f);
        this.inboxBytes += f.payload.length;
      }
    }
    // Backpressure: stop reading while the consumer is behind, so memory stays bounded.
    if (!this.paused && this.inboxBytes > INBOX_HIGH_WATER) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private fail(err: TidemarkError): void {
    if (this.failure) return;
    this.failure = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    }
  }

  /** Next frame from the peer. A peer's ErrorReport is raised as a TM_ERR_PEER_ERROR carrying its code. */
  async next(): Promise<Frame> {
    const queued = this.inbox.shift();
    if (queued) this.inboxBytes -= queued.payload.length;
    if (this.paused && this.inboxBytes < INBOX_HIGH_WATER / 2) {
      this.paused = false;
      this.socket.resume();
    }
    const f = queued ?? (await this.wait());
    if ('error' in f.msg) {
      const r = f.msg.error;
      throw tmError('TM_ERR_PEER_ERROR', `${this.peerLabel} reported ${r.code}: ${r.message}`, { peer: this.peerLabel, peerCode: r.code, volume: r.volumeId || undefined, seq: r.seq || undefined });
    }
    return f;
  }

  /** Next frame, which must be of `kind`. */
  async expect<K extends MessageKind>(kind: K): Promise<Frame & { msg: Extract<Message, Record<K, unknown>> }> {
    const f = await this.next();
    if (f.msg.body !== kind) throw tmError('TM_ERR_PROTOCOL', `expected ${kind} from ${this.peerLabel}, got ${f.msg.body}`, { peer: this.peerLabel });
    return f as Frame & { msg: Extract<Message, Record<K, unknown>> };
  }

  private wait(): Promise<Frame> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /**
   * Write a frame; resolves once the socket can take more (TCP backpressure). Payload bytes are not copied.
   * `payloadCrc`: the payload's crc32c when the caller already has it (encodeFramePrefix).
   * While corked, the frame is held with the others until CORK_BYTES are held (or uncork/flush); an
   * ErrorReport is never held.
   */
  async send(msg: Message, payload?: Buffer, payloadCrc?: number): Promise<void> {
    if (this.failure && !('error' in msg)) throw this.failure;
    const prefix = encodeFramePrefix(msg, payload, payloadCrc);
    const n = prefix.length + (payload?.length ?? 0);
    this.held.push(prefix);
    if (payload && payload.length > 0) this.held.push(payload);
    this.heldBytes += n;
    this.bytesOut += n;
    if (this.corked > 0 && !('error' in msg) && this.heldBytes < CORK_BYTES) return;
    await this.flush();
  }

  /** Hold the frames sent from now on, to write them together (nests; see CORK_BYTES). */
  cork(): void {
    this.corked++;
  }

  /** Hand the held frames to the socket now, in one burst, and wait until it can take more. */
  async flush(): Promise<void> {
    if (!this.writeHeld() && !this.failure) await this.drained();
  }

  /** End what cork() began: the held frames go out; resolves once the socket can take more. */
  async uncork(): Promise<void> {
    if (this.corked === 0) return;
    if (--this.corked > 0) return;
    await this.flush();
  }

  /**
   * Write the held buffers between a socket cork and uncork, so they leave as one writev. The socket is
   * never left corked across an await: a cork held while an earlier write is in flight keeps Node from
   * writing what was buffered behind it, and 'drain' would never come. False: wait for 'drain'.
   */
  private writeHeld(): boolean {
    const bufs = this.held;
    if (bufs.length === 0) return true;
    this.held = [];
    this.heldBytes = 0;
    this.socket.cork();
    let ok = true;
    for (const b of bufs) ok = this.socket.write(b);
    this.socket.uncork();
    return ok;
  }

  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        if (this.failure) reject(this.failure);
        else resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** Report an error to the peer, then close. */
  async refuse(err: TidemarkError, volumeId = '', seq = 0): Promise<void> {
    try {
      await this.send({ error: { code: err.code, message: err.message, volumeId, seq, retryable: err.retryable } });
    } catch {
      /* peer already gone */
    }
    this.close();
  }

  close(): void {
    this.fail(tmError('TM_ERR_CLOSED', `${this.peerLabel}: closed locally`));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.fail(tmError('TM_ERR_CLOSED', `${this.peerLabel}: destroyed`));
    this.socket.destroy();
  }
}
