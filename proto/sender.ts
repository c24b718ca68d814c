// The sending half of the differential protocol, shared by the agent (to its process server) and the
// process server (to each master target). One connection carries many volumes; each volume has a window
// of unacknowledged differentials; a cumulative durable ack lets the source delete what it holds.
// After any failure it reconnects and resumes from the receiver's durable sequence.
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/log.js';
import { ERRORS, TidemarkError, tmError, type ErrorCode, asTidemarkError, isTidemarkError } from '../common/errors.js';
import { DEFAULTS } from '../common/defaults.js';
import { FramedConnection } from './connection.js';
import { extentsOf, type StoredDiff } from './hrl.js';
import { CAPABILITIES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type Backpressure, type HashAnswer, type HashQuery, type OpenVolume } from './messages.js';

export interface OutboundVolume {
  readonly volumeId: string;
  /** What to open the volume with, or null while not yet known (the volume is skipped until it is). */
  describe(): Omit<OpenVolume, 'volumeId'> | null | Promise<Omit<OpenVolume, 'volumeId'> | null>;
  /** The receiver accepted the volume (VolumeState or ResyncNeeded with regression), before anything is sent. */
  opened?(): Promise<void>;
  /**
   * ResyncNeeded (docs/PROTOCOL.md): the receiver holds everything up to `durableSeq` from a history this
   * volume's is not a continuation of (`regression`: renumber after it and resync), or it lost data only a
   * resync restores. Senders without it are never sent the message (they do not list "resync-needed").
   */
  resyncNeeded?(reason: string, regression: boolean, durableSeq: number): Promise<void>;
  /** Committed differentials not yet acknowledged, ascending. */
  pending(): Promise<number[]>;
  /** Load a differential to send. A corrupt file should be repaired here (or the error thrown). */
  load(seq: number): Promise<StoredDiff>;
  /** Everything up to `seq` is durable downstream: forget it (durably). */
  acked(seq: number): Promise<void>;
}

/** How long a volume the receiver refused (wrong owner, unknown...) waits before it is offered again. */
const REFUSED_RETRY_MS = 30_000;
/** ...and one it could not take for another reason (its replica is unavailable, say). */
const ERROR_RETRY_MS = 2_000;
/**
 * Each refusal in a row doubles the wait, up to this: a differential the receiver cannot take (too
 * large for its cache or disk) is not sent again and again at full speed.
 */
export const REFUSED_RETRY_MAX_MS = 600_000;
/** A hash query waits for the master target to apply what came before it; generous, then asked again. */
const QUERY_TIMEOUT_MS = 120_000;

export interface SenderOptions {
  nodeName: string;
  role: string;
  log: Logger;
  connect: () => Promise<{ socket: Duplex; peerName: string }>;
  volumes: () => OutboundVolume[];
  window?: number;
  /**
   * Awaited before each extent's bytes are written (the process server's bandwidth throttle, shared by
   * all its forwarders). `signal` aborts when the session ends, so a waiter for a peer that is gone
   * leaves the queue instead of taking bandwidth it cannot use; a rejection ends the session.
   */
  pace?: (volumeId: string, bytes: number, signal: AbortSignal) => Promise<void>;
}

interface Lane {
  vol: OutboundVolume;
  sent: number; // highest seq sent on this connection
  acked: number; // receiver's durable seq
  inFlight: Map<number, number>; // seq -> bytes sent, until acknowledged
  /** Sent differentials' pooled bodies, until the receiver acknowledges them (DiffSender.hold). */
  pooled: Map<number, Held>;
}

/** A sent differential's pooled bodies (Extent.release) and their bytes. */
interface Held {
  bytes: number;
  releases: Array<() => void>;
}

/**
 * Bytes of pooled bodies one sender (all its volumes) holds until acknowledged; past that a sent
 * differential's are left to the collector at once, so a slow receiver cannot make it hold a window
 * of differentials per volume.
 */
export const POOLED_HOLD_BYTES = 64 * 1024 * 1024;

export interface SenderStats {
  connected: boolean;
  peer: string;
  diffsSent: number;
  bytesSent: number;
  lastError: string | null;
  lastAckAt: number;
  /** Since when the receiver has been unreachable (ms since the epoch; 0 while connected). */
  downSince: number;
  /** The receiver asked us to begin no new differential (Backpressure): connected, but not sending. */
  backpressure: boolean;
  backpressureReason: string;
  /** Since when (ms since the epoch; 0 when not paused). */
  backpressureSince: number;
  /** Bytes of differentials the receiver refused (sent, not taken); not in bytesSent's progress. */
  bytesRefused: number;
  /** Volumes the receiver refuses now, and why; each waits until `retryAt`, longer each time in a row. */
  refusals: Record<string, Refusal>;
}

export interface Refusal {
  code: string;
  message: string;
  /** The differential refused; 0 when the volume itself was (at open). */
  seq: number;
  /** Refusals in a row, and since when (ms since the epoch). */
  count: number;
  since: number;
  retryAt: number;
}

export class DiffSender {
  readonly stats: SenderStats = { connected: false, peer: '', diffsSent: 0, bytesSent: 0, lastError: null, lastAckAt: 0, downSince: Date.now(), backpressure: false, backpressureReason: '', backpressureSince: 0, bytesRefused: 0, refusals: {} };
  private closing = false;
  private conn: FramedConnection | null = null;
  private wake: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private readonly window: number;
  private readonly refused = new Map<string, number>(); // volume -> retry-after time
  /** Volumes the receiver paused ('' = all of them), with its reason; lasts for the session. */
  private readonly paused = new Map<string, string>();
  private readonly queries = new Map<number, { q: HashQuery; hashes: Buffer; resolve(a: HashAnswer): void; reject(e: Error): void; sent: boolean }>();
  private nextRequest = 1;
  /** Bytes of pooled bodies held across lanes until acknowledged (hold). */
  private pooledBytes = 0;

  constructor(private readonly opts: SenderOptions) {
    this.window = opts.window ?? DEFAULTS.transfer.window;
  }

  start(): void {
    this.running ??= this.run();
  }

  /**
   * Ask the receiver which ranges differ (resync). Sent between differentials, in order after everything
   * already queued; fails with TM_ERR_CONNECTION if the session ends first (the caller asks again).
   */
  query(q: Omit<HashQuery, 'requestId'>, hashes: Buffer, timeoutMs = QUERY_TIMEOUT_MS): Promise<HashAnswer> {
    const requestId = this.nextRequest++;
    // No session to send it on: fail now rather than hold the caller (and its other volumes) for the timeout.
    if (!this.stats.connected) return Promise.reject(tmError('TM_ERR_CONNECTION', `not connected to ${this.stats.peer || 'the receiver'}: ${this.stats.lastError ?? 'connecting'}`, { volume: q.volumeId }));
    // Nor while the receiver has set this volume aside: the question could not be sent until then.
    if ((this.refused.get(q.volumeId) ?? 0) > Date.now()) return Promise.reject(tmError('TM_ERR_CONNECTION', `${this.stats.peer} does not take volume ${q.volumeId} for now: ${this.stats.lastError ?? ''}`, { volume: q.volumeId }));
    return new Promise<HashAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.queries.delete(requestId);
        reject(tmError('TM_ERR_CONNECTION', `no answer to hash query ${requestId} for ${q.volumeId} within ${timeoutMs} ms`, { volume: q.volumeId }));
      }, timeoutMs);
      this.queries.set(requestId, {
        q: { ...q, requestId },
        hashes,
        sent: false,
        resolve: (a) => { clearTimeout(timer); resolve(a); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.notify();
    });
  }

  private failQueries(err: Error): void {
    for (const [id, pending] of this.queries) {
      this.queries.delete(id);
      pending.reject(err);
    }
  }

  /** Send queued queries whose volume is open on this connection. */
  private async sendQueries(conn: FramedConnection, lanes: Map<string, Lane>): Promise<boolean> {
    let sent = false;
    for (const pending of this.queries.values()) {
      const lane = lanes.get(pending.q.volumeId);
      if (pending.sent || !lane || lane.acked < 0) continue;
      pending.sent = true;
      sent = true;
      await conn.send({ hashQuery: pending.q }, pending.hashes);
    }
    return sent;
  }

  /** New differentials (or new volumes) are ready. */
  notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async close(): Promise<void> {
    this.closing = true;
    this.conn?.close();
    this.notify();
    await this.running;
  }

  private async run(): Promise<void> {
    let backoff: number = DEFAULTS.transfer.reconnectMinMs;
    while (!this.closing) {
      try {
        const { socket, peerName } = await this.opts.connect();
        const conn = new FramedConnection(socket, peerName);
        this.conn = conn;
        this.stats.peer = peerName;
        await this.session(conn, () => { backoff = DEFAULTS.transfer.reconnectMinMs; });
      } catch (e) {
        const err = asTidemarkError(e);
        this.stats.lastError = `${err.code}: ${err.message}`;
        if (!this.closing) this.opts.log.warn({ code: err.code, err: err.message }, 'transfer interrupted; will reconnect');
      } finally {
        this.failQueries(tmError('TM_ERR_CONNECTION', 'session ended before the answer'));
        this.setPaused(null);
        if (this.stats.connected) this.stats.downSince = Date.now();
        this.stats.connected = false;
        this.conn?.destroy();
        this.conn = null;
      }
      if (this.closing) break;
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, DEFAULTS.transfer.reconnectMaxMs);
    }
  }

  private async session(conn: FramedConnection, connected: () => void): Promise<void> {
    await conn.send({ hello: { protocolVersion: PROTOCOL_VERSION, minProtocolVersion: MIN_PROTOCOL_VERSION, capabilities: [...CAPABILITIES], nodeName: this.opts.nodeName, role: this.opts.role, software: 'tidemark' } });
    const { msg: { welcome } } = await conn.expect('welcome');
    // Hash queries go out between the extents of a differential too, where the receiver takes them there.
    const anywhere = welcome.capabilities.includes('query-anywhere');
    this.stats.connected = true;
    this.stats.downSince = 0;
    connected();
    const lanes = new Map<string, Lane>();
    // Answers are taken as they arrive, not after acks queued before them (whose handling writes state).
    conn.intercept = (f) => {
      if (!('hashAnswer' in f.msg)) return false;
      this.answered(f.msg.hashAnswer);
      return true;
    };
    const reader = this.readAcks(conn, lanes);
    const ended = new AbortController(); // withdraws a pace() waiter once this session cannot send
    // Reader failures end the session; swallow here so the writer's error (or this one) surfaces once.
    let readerError: unknown = null;
    reader.catch((e) => { readerError = e; conn.destroy(); ended.abort(); this.notify(); });
    try {
      while (!this.closing && !conn.closed) {
        await this.openNewVolumes(conn, lanes);
        const progressed = await this.sendRound(conn, lanes, ended.signal, anywhere);
        const asked = await this.sendQueries(conn, lanes);
        if (!progressed && !asked) await this.sleep(1000);
      }
    } catch (e) {
      throw readerError ?? e; // the peer's own report says more than our "connection closed"
    } finally {
      ended.abort();
      for (const lane of lanes.values()) this.dropHeld(lane);
    }
    if (readerError) throw readerError;
  }

  /** Open volumes this connection has not opened yet; the answer (state or refusal) arrives on the reader. */
  private async openNewVolumes(conn: FramedConnection, lanes: Map<string, Lane>): Promise<void> {
    for (const vol of this.opts.volumes()) {
      if (lanes.has(vol.volumeId)) continue;
      if ((this.refused.get(vol.volumeId) ?? 0) > Date.now()) continue;
      const d = await vol.describe();
      if (!d) continue;
      lanes.set(vol.volumeId, { vol, sent: -1, acked: -1, inFlight: new Map(), pooled: new Map() }); // -1: waiting for VolumeState
      await conn.send({ openVolume: { volumeId: vol.volumeId, ...d } });
    }
  }

  private async readAcks(conn: FramedConnection, lanes: Map<string, Lane>): Promise<void> {
    for (;;) {
      let f;
      try {
        f = await conn.next();
      } catch (e) {
        // An error about one volume sets that volume aside and leaves the others running; if the receiver
        // also dropped the connection, the session ends anyway and resumes from the last ack.
        const vol = isTidemarkError(e) && e.code === 'TM_ERR_PEER_ERROR' ? String(e.context.volume ?? '') : '';
        if (vol && lanes.has(vol)) {
          this.refuse(lanes.get(vol)!, e as TidemarkError);
          lanes.delete(vol);
          continue;
        }
        throw e;
      }
      const { msg } = f;
      if ('hashAnswer' in msg) {
        this.answered(msg.hashAnswer);
      } else if ('backpressure' in msg) {
        const b = msg.backpressure;
        this.setPaused(b);
        this.notify();
      } else if ('resyncNeeded' in msg) {
        const r = msg.resyncNeeded;
        const lane = lanes.get(r.volumeId);
        if (!lane) continue;
        this.opts.log.warn({ volume: r.volumeId, regression: r.regression, durableSeq: r.regression ? r.durableSeq : undefined, reason: r.reason }, 'receiver says the volume needs a resync');
        // Before the lane opens: nothing of ours may be sent (or acknowledged) under the old numbering.
        await lane.vol.resyncNeeded?.(r.reason, r.regression, r.durableSeq);
        if (r.regression) {
          this.dropHeld(lane); // sent under the old numbering: never acknowledged as such
          await lane.vol.opened?.();
          lane.sent = r.durableSeq;
          lane.acked = r.durableSeq;
          this.notify();
        }
      } else if ('volumeState' in msg || 'ack' in msg) {
        const { volumeId, durableSeq } = 'ack' in msg ? msg.ack : msg.volumeState;
        const lane = lanes.get(volumeId);
        if (!lane) continue;
        if ('volumeState' in msg) {
          await lane.vol.opened?.();
          lane.sent = durableSeq;
        }
        const r = this.stats.refusals[volumeId];
        if (r && (durableSeq >= Math.max(r.seq, 1) || ('volumeState' in msg && r.seq === 0))) delete this.stats.refusals[volumeId];
        if (durableSeq > lane.acked) {
          for (const s of lane.inFlight.keys()) if (s <= durableSeq) lane.inFlight.delete(s);
          for (const [s, h] of lane.pooled) {
            if (s > durableSeq) continue;
            lane.pooled.delete(s);
            this.pooledBytes -= h.bytes;
            for (const release of h.releases) release();
          }
          lane.acked = durableSeq;
          await lane.vol.acked(durableSeq);
          this.stats.lastAckAt = Date.now();
        }
        this.notify();
      } else {
        throw tmError('TM_ERR_PROTOCOL', `unexpected ${msg.body} from receiver`);
      }
    }
  }

  private answered(a: HashAnswer): void {
    const pending = this.queries.get(a.requestId);
    this.queries.delete(a.requestId);
    if (a.errorCode) {
      const code = (a.errorCode in ERRORS ? a.errorCode : 'TM_ERR_PEER_ERROR') as ErrorCode;
      pending?.reject(tmError(code, `${this.stats.peer} could not answer for ${a.volumeId}: ${a.errorMessage ?? ''}`, { volume: a.volumeId }));
    } else {
      pending?.resolve(a);
    }
  }

  /** Send at most one differential per volume, round robin, so no volume starves the others. */
  private async sendRound(conn: FramedConnection, lanes: Map<string, Lane>, ended: AbortSignal, anywhere: boolean): Promise<boolean> {
    let progressed = false;
    for (const lane of lanes.values()) {
      if (lane.acked < 0 || lane.sent - lane.acked >= this.window || this.isPaused(lane.vol.volumeId)) continue;
      const next = (await lane.vol.pending()).find((s) => s > lane.sent);
      if (next === undefined) continue;
      if (next !== lane.sent + 1) {
        throw tmError('TM_ERR_SEQUENCE_GAP', `volume ${lane.vol.volumeId}: receiver is durable to ${lane.acked} but the next differential here is ${next}`, { volume: lane.vol.volumeId, seq: next });
      }
      const diff = await lane.vol.load(next);
      lane.inFlight.set(next, 0);
      const between = anywhere ? () => this.sendQueries(conn, lanes) : null;
      await this.sendDiff(conn, diff, ended, (n) => lane.inFlight.set(next, (lane.inFlight.get(next) ?? 0) + n), between);
      this.hold(lane, next, diff);
      lane.sent = next;
      progressed = true;
      if (conn.closed) break;
      // Between differentials, not after the round: a throttled round can take minutes.
      await this.sendQueries(conn, lanes);
    }
    return progressed;
  }

  /**
   * Keep a sent differential's pooled bodies until the receiver acknowledges it: its ack proves every byte
   * left this process. Called once sendDiff returned, and so once the socket took every frame: a flush
   * waits for 'drain' whenever a write leaves more than the socket's high-water mark (16 KiB) buffered,
   * which any pooled body (32 KiB or more) does, and a TLS socket has encrypted what it took. Already
   * acknowledged by then (an ack overtook the last flush): given back now.
   */
  private hold(lane: Lane, seq: number, diff: StoredDiff): void {
    if ('file' in diff) return;
    const releases: Array<() => void> = [];
    let bytes = 0;
    for (const e of diff.extents) {
      if (!e.release) continue;
      releases.push(e.release);
      e.release = undefined;
      bytes += e.data.length;
    }
    if (releases.length === 0) return;
    if (seq <= lane.acked) {
      for (const release of releases) release();
      return;
    }
    if (this.pooledBytes + bytes > POOLED_HOLD_BYTES) return; // left to the collector
    this.dropHeld(lane, seq);
    lane.pooled.set(seq, { bytes, releases });
    this.pooledBytes += bytes;
  }

  /** Forget what `lane` holds (from `from` on; all by default) without giving it back: the collector takes it. */
  private dropHeld(lane: Lane, from = 0): void {
    for (const [s, h] of lane.pooled) {
      if (s < from) continue;
      lane.pooled.delete(s);
      this.pooledBytes -= h.bytes;
    }
  }

  /**
   * The receiver refused `lane`'s volume or one of its differentials: set the volume aside, each refusal
   * in a row twice as long as the last, and count what it did not take apart from what went through.
   */
  private refuse(lane: Lane, e: TidemarkError): void {
    const vol = lane.vol.volumeId;
    const peerCode = String(e.context.peerCode ?? '');
    const seq = Number(e.context.seq ?? 0);
    const refusal = peerCode in ERRORS && ERRORS[peerCode as ErrorCode].class === 'refused';
    const prev = this.stats.refusals[vol];
    const count = prev && prev.seq === seq ? prev.count + 1 : 1;
    const waitMs = Math.min((refusal ? REFUSED_RETRY_MS : ERROR_RETRY_MS) * 2 ** (count - 1), REFUSED_RETRY_MAX_MS);
    const refusedBytes = seq > 0 ? [...lane.inFlight].filter(([s]) => s >= seq).reduce((n, [, b]) => n + b, 0) : 0;
    this.stats.bytesRefused += refusedBytes;
    const now = Date.now();
    this.stats.refusals[vol] = { code: peerCode, message: e.message, seq, count, since: prev && prev.seq === seq ? prev.since : now, retryAt: now + waitMs };
    this.opts.log.error({ volume: vol, code: peerCode, seq: seq || undefined, refusedBytes, count, retryInMs: waitMs, err: e.message }, 'peer refused volume; retrying later');
    this.stats.lastError = e.message;
    this.refused.set(vol, now + waitMs);
  }

  /**
   * `between`: where the receiver takes hash queries inside a differential (query-anywhere), sends those
   * queued, after each extent; they go out at once rather than after up to maxDiffBytes of extents.
   */
  private async sendDiff(conn: FramedConnection, diff: StoredDiff, ended: AbortSignal, sent: (bytes: number) => void, between: (() => Promise<boolean>) | null = null): Promise<void> {
    const h = diff.header;
    // The differential's frames go out together, CORK_BYTES at a time, not one socket write per extent.
    conn.cork();
    try {
      await conn.send({ diffBegin: { volumeId: h.volumeId, seq: h.seq, startTimeMs: h.startTimeMs, endTimeMs: h.endTimeMs, consistency: h.consistency, tags: h.tags, extentCount: diff.extents.length, flags: h.flags } });
      for await (const e of extentsOf(diff)) {
        // Per extent (at most ~1 MiB), not per differential (up to maxDiffBytes): keeps the rate smooth.
        if (this.opts.pace) {
          const paced = this.opts.pace(h.volumeId, e.data.length, ended);
          // Held frames go out before a wait: the throttle's rate is what the wire sees.
          if (!(await settledNow(paced))) await conn.flush();
          await paced;
        }
        // The frame's crc is combined from the extent's (raw data: its own crc; kept extents: the stored
        // crc their writer had) instead of reading the bytes again; else computed from the bytes.
        const payloadCrc = e.storedCrc ?? (e.compression === 'NONE' ? e.crc32c : undefined);
        await conn.send({ extent: { offset: e.offset, length: e.length, crc32c: e.crc32c, compression: e.compression, storedLength: e.storedLength } }, e.data, payloadCrc);
        this.stats.bytesSent += e.data.length;
        sent(e.data.length);
        if (between && (await between())) await conn.flush();
      }
      await conn.send({ diffEnd: { volumeId: h.volumeId, seq: h.seq, extentCount: diff.extents.length, extentDigest: diff.extentDigest } });
    } finally {
      await conn.uncork();
    }
    this.stats.diffsSent++;
  }

  private isPaused(volumeId: string): boolean {
    return this.paused.has('') || this.paused.has(volumeId);
  }

  /**
   * Backpressure from the receiver (docs/PROTOCOL.md): paused volumes begin no new differential, but the
   * session, acks and queries go on, and it is not counted as the receiver being down. null: session over.
   */
  private setPaused(b: Backpressure | null): void {
    const was = this.paused.size > 0;
    if (b === null) this.paused.clear();
    else if (b.paused) this.paused.set(b.volumeId, b.reason);
    else if (b.volumeId === '') this.paused.clear();
    else this.paused.delete(b.volumeId);
    const now = this.paused.size > 0;
    this.stats.backpressure = now;
    this.stats.backpressureReason = [...this.paused.values()].join('; ');
    if (now === was) return;
    this.stats.backpressureSince = now ? Date.now() : 0;
    if (b === null) return;
    if (now) this.opts.log.warn({ peer: this.stats.peer, volume: b.volumeId || undefined, reason: b.reason }, 'receiver asked to pause sending (backpressure)');
    else this.opts.log.info({ peer: this.stats.peer }, 'receiver asked to resume sending');
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }
}

/** Whether `p` has settled (either way) by the time the microtasks queued before this call have run. */
async function settledNow(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  await Promise.resolve();
  return settled;
}
