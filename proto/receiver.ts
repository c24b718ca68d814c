// The receiving half of the differential protocol, shared by the process server (from agents) and the
// master target (from process servers). It writes each differential durably as an .hrl file in the
// sink's directory and acknowledges cumulatively only after the file and its directory entry are fsync'd.
// The sink may slow or stop what it takes (setFlow): peers that speak "backpressure" are told to pause,
// others are simply not read from until there is room.
import type { Logger } from '../common/log.js';
import { tmError, asTidemarkError, type TidemarkError } from '../common/errors.js';
import type { FramedConnection } from './connection.js';
import { HrlWriter, type Diff, type ExtentRecord } from './hrl.js';
import { checkDiffSize, checkExtent, checkGeometry, DEFAULT_MAX_DIFF_BYTES } from './limits.js';
import { CAPABILITIES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type DiffBegin, type HashAnswer, type HashQuery, type OpenVolume } from './messages.js';

export interface Peer {
  name: string;
  role: string;
  /** The capabilities both sides listed in the handshake (set by the receiver). */
  capabilities?: readonly string[];
}

/** A resync the sink needs the sender to run (ResyncNeeded, docs/PROTOCOL.md). */
export interface ResyncRequest {
  reason: string;
  /** The sender's history is not a continuation of ours: answer OpenVolume with this instead of VolumeState. */
  regression: boolean;
}

/** An extent as a sink stores it. */
export interface Transformed {
  record: ExtentRecord;
  stored: Buffer;
  /** crc32c of `stored`. */
  storedCrc: number;
}

export interface InboundSink {
  /** Authorize the peer for this volume and say where to store it; throw a TidemarkError to refuse. */
  openVolume(peer: Peer, ov: OpenVolume): Promise<{ dir: string; resync?: ResyncRequest }>;
  /**
   * Verify and reshape one extent before it is stored (the process server compresses here). `payloadCrc`
   * is the payload's crc32c, computed from its bytes when the frame was verified; the result's `storedCrc`
   * is the crc32c of `stored` (from which the file crc is combined without reading the bytes again).
   */
  transform(volumeId: string, seq: number, e: ExtentRecord, payload: Buffer, payloadCrc: number): Promise<Transformed>;
  /** A differential is durable under its final name. The sink acknowledges it (now or later) with DiffReceiver.ack. */
  committed(volumeId: string, seq: number, info: { rawBytes: number; storedBytes: number; begin: DiffBegin; diff: Diff | null }): Promise<void>;
  /** Highest sequence stored durably here: the next one must be this + 1. */
  storedSeq(volumeId: string): number;
  /** Highest sequence acknowledged: everything up to it may be forgotten upstream. Resumption starts after it. */
  ackedSeq(volumeId: string): number;
  /** Which queried ranges differ (master target: answers; process server: relays downstream). */
  answerQuery(q: HashQuery, hashes: Buffer): Promise<HashAnswer>;
  /** Volume size and block size recorded at openVolume; stamped into every stored header. */
  geometryOf(volumeId: string): { volumeSize: number; blockSize: number };
}

export interface ReceiverStats {
  diffsReceived: number;
  bytesReceived: number;
  duplicatesSkipped: number;
  /** Differentials made to wait before they were taken (slow-down, or held while full). */
  diffsDelayed: number;
  /** Differentials refused part-way (too large, no room to store them...) and their bytes: not in bytesReceived. */
  diffsRefused: number;
  bytesRefused: number;
}

/** How much the sink can take now (process server: from its cache quota, process-server/health.ts). */
export interface FlowState {
  /** Ask peers that take Backpressure to begin no new differential; hold the others' before reading them. */
  paused: boolean;
  /** Which volumes are paused (the ones filling the cache); the others go on. */
  volumes: string[];
  reason: string;
  /** Wait this long before taking each new differential (the sink is filling). */
  delayMs: number;
  /** At the quota: take no new differential of the paused volumes, even from peers told to pause. */
  full: boolean;
  /** The cache's filesystem itself is nearly out of space: take nothing from anyone. */
  exhausted?: boolean;
}

/** Differentials being verified and compressed at once on one connection (process-server/compressor.ts). */
const TRANSFORM_DEPTH = 4;
/** A held differential re-checks this often even if no flow change wakes it (e.g. its connection closed). */
const HOLD_POLL_MS = 1000;
/**
 * Differentials of one connection whose commit (fsync, rename, directory fsync, the sink's record) may run
 * while the next one is read: the disk's flush and the network overlap instead of taking turns.
 */
const COMMIT_DEPTH = 2;

/**
 * One connection's commits, run one at a time in the order the differentials were read, so acks stay
 * cumulative and in order. A differential is acknowledged only when its own commit is over.
 */
class CommitQueue {
  private tail: Promise<void> = Promise.resolve();
  private readonly running: Promise<void>[] = [];
  /** Per volume: the newest sequence read whole and queued for commit (durable once its commit is over). */
  readonly queuedSeq = new Map<string, number>();
  /** The first commit that failed: nothing after it is committed, and the peer was told. */
  failure: unknown = null;

  /**
   * Queue `commit` after the ones before it; waits while COMMIT_DEPTH are queued already. When it (or one
   * before it) fails, `failed` runs instead, `first` true for the failure itself (the peer is told once).
   */
  async add(volumeId: string, seq: number, commit: () => Promise<void>, failed: (e: unknown, first: boolean) => Promise<void>): Promise<void> {
    this.queuedSeq.set(volumeId, seq);
    const p = this.tail.then(async () => {
      try {
        if (this.failure) throw this.failure;
        await commit();
      } catch (e) {
        const first = this.failure === null;
        this.failure ??= e;
        await failed(e, first);
        throw e;
      }
    });
    this.tail = p.catch(() => {});
    this.running.push(p);
    void p.catch(() => {}).finally(() => this.running.splice(this.running.indexOf(p), 1));
    while (this.running.length >= COMMIT_DEPTH) await Promise.race(this.running.map((r) => r.catch(() => {})));
    if (this.failure) throw this.failure;
  }

  /** Every queued commit over (failed or not). */
  async settle(): Promise<void> {
    await this.tail;
  }
}

/** An error named for the volume and differential it concerns (the sender sets that volume aside). */
function named(err: TidemarkError, volumeId: string, seq: number): TidemarkError {
  return err.context.volume === undefined ? tmError(err.code, `volume ${volumeId} seq ${seq}: ${err.message}`, { ...err.context, volume: volumeId, seq }, err) : err;
}

export class DiffReceiver {
  readonly stats: ReceiverStats = { diffsReceived: 0, bytesReceived: 0, duplicatesSkipped: 0, diffsDelayed: 0, diffsRefused: 0, bytesRefused: 0 };
  /** The connection currently allowed to write each volume; a newer one takes over (reconnect). */
  private readonly owners = new Map<string, FramedConnection>();
  private flow: FlowState = { paused: false, volumes: [], reason: '', delayMs: 0, full: false };
  private readonly flowWaiters = new Set<() => void>();
  /** Connections whose peer listed the "backpressure" capability. */
  private readonly signalled = new Set<FramedConnection>();
  /** Connections whose peer listed the "resync-needed" capability. */
  private readonly resyncCapable = new Set<FramedConnection>();
  /** Per volume, the owner once it was told VolumeState: acks go there (never ahead of that state). */
  private readonly acking = new Map<string, FramedConnection>();
  /** Each connection served now: the differential it is reading, if any, and its commits. */
  private readonly sessions = new Map<FramedConnection, { reading: Promise<void> | null; commits: CommitQueue }>();

  /** `maxDiffBytes`: the largest differential (uncompressed bytes) taken from a peer (proto/limits.ts). */
  constructor(private readonly sink: InboundSink, private readonly nodeName: string, private readonly log: Logger, private readonly maxDiffBytes = DEFAULT_MAX_DIFF_BYTES) {}

  /** Serve one authenticated connection until it ends (its commits over too). Never throws. */
  async serve(conn: FramedConnection, peer: Peer): Promise<void> {
    const log = this.log.child({ peer: peer.name });
    const session = { reading: null, commits: new CommitQueue() };
    const { commits } = session;
    this.sessions.set(conn, session);
    try {
      const common = await this.handshake(conn, peer);
      if (common.includes('resync-needed')) this.resyncCapable.add(conn);
      if (common.includes('backpressure')) {
        this.signalled.add(conn);
        if (this.flow.paused) await this.signal(conn);
      }
      await this.loop(conn, { ...peer, capabilities: common }, log, session);
    } catch (e) {
      const err = asTidemarkError(e);
      if (commits.failure) log.info({ code: err.code }, 'connection closed after a failed commit');
      else if (err.code === 'TM_ERR_CONNECTION' || err.code === 'TM_ERR_CLOSED') log.info({ code: err.code }, 'peer disconnected');
      else {
        log.warn({ code: err.code, err: err.message, ...err.context }, 'connection refused or dropped');
        await conn.refuse(err, String(err.context.volume ?? ''), Number(err.context.seq ?? 0));
      }
    } finally {
      // Read differentials are committed even when the peer is gone: durable here, acked at its reconnect.
      await commits.settle();
      this.sessions.delete(conn);
      for (const [vol, owner] of this.owners) if (owner === conn) this.owners.delete(vol);
      for (const [vol, to] of this.acking) if (to === conn) this.acking.delete(vol);
      this.signalled.delete(conn);
      this.resyncCapable.delete(conn);
      conn.close();
    }
  }

  /** Returns the capabilities both sides have. */
  private async handshake(conn: FramedConnection, peer: Peer): Promise<string[]> {
    const { msg } = await conn.expect('hello');
    const h = msg.hello;
    if (h.protocolVersion < MIN_PROTOCOL_VERSION || h.minProtocolVersion > PROTOCOL_VERSION) {
      throw tmError('TM_ERR_PROTOCOL_VERSION', `peer ${peer.name} speaks protocol ${h.minProtocolVersion}..${h.protocolVersion}; we speak ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`, { peer: peer.name });
    }
    const common = CAPABILITIES.filter((c) => h.capabilities.includes(c));
    await conn.send({ welcome: { protocolVersion: Math.min(PROTOCOL_VERSION, h.protocolVersion), capabilities: common, nodeName: this.nodeName } });
    return common;
  }

  /**
   * A connection cut (taken over, or its volume dropped): wait for the differential it was reading (it
   * fails at its next read) and for its commits. Never for the rest of its session, which may itself be
   * waiting on another connection (two peers taking each other's volumes over).
   */
  private async quiesce(conn: FramedConnection): Promise<void> {
    conn.destroy();
    const s = this.sessions.get(conn);
    if (!s) return;
    await s.reading?.catch(() => {});
    await s.commits.settle();
  }

  private async loop(conn: FramedConnection, peer: Peer, log: Logger, session: { reading: Promise<void> | null; commits: CommitQueue }): Promise<void> {
    const opened = new Map<string, string>(); // volume -> dir
    // A hash query is answered as soon as it arrives, not after the frames queued before it: it may come
    // between the extents of a differential (capability query-anywhere) or behind one still being received
    // and committed, and its answer waits only for what its after_seq names (docs/PROTOCOL.md §6). One
    // for a volume not open on this connection yet takes its turn here, where it is refused as before.
    conn.intercept = (f) => {
      if (!('hashQuery' in f.msg)) return false;
      const q = f.msg.hashQuery;
      if (!opened.has(q.volumeId) || this.owners.get(q.volumeId) !== conn) return false;
      this.answer(conn, q, f.payload, log);
      return true;
    };
    for (;;) {
      const { msg, payload } = await conn.next();
      if ('openVolume' in msg) {
        const ov = msg.openVolume;
        try {
          checkGeometry(ov.volumeId, ov.sizeBytes, ov.blockSize);
          let { dir, resync } = await this.sink.openVolume(peer, ov); // authorized before any takeover
          // A reconnect takes the volume over at once (an older connection then reads nothing more of it),
          // and its read and commits end first, so the state told below counts them and no two writers
          // ever stage the same sequence.
          const previous = this.owners.get(ov.volumeId);
          this.owners.set(ov.volumeId, conn);
          this.acking.delete(ov.volumeId);
          if (previous && previous !== conn) {
            const before = this.sink.storedSeq(ov.volumeId);
            await this.quiesce(previous);
            if (this.owners.get(ov.volumeId) !== conn) throw tmError('TM_ERR_CLOSED', `volume ${ov.volumeId} was taken over by a newer connection`, { volume: ov.volumeId });
            // The old connection committed meanwhile: the sink's checks (history, regression) see that too.
            if (this.sink.storedSeq(ov.volumeId) !== before) ({ dir, resync } = await this.sink.openVolume(peer, ov));
          }
          opened.set(ov.volumeId, dir);
          const durableSeq = this.sink.ackedSeq(ov.volumeId);
          if (resync?.regression) {
            await conn.send({ resyncNeeded: { volumeId: ov.volumeId, reason: resync.reason, regression: true, durableSeq } });
          } else {
            await conn.send({ volumeState: { volumeId: ov.volumeId, durableSeq } });
            if (resync) await conn.send({ resyncNeeded: { volumeId: ov.volumeId, reason: resync.reason, regression: false, durableSeq } });
          }
          // Told where it stands: acks of what it sends may follow.
          if (this.owners.get(ov.volumeId) === conn) this.acking.set(ov.volumeId, conn);
        } catch (e) {
          // Refuse this volume only; the peer's other volumes keep flowing.
          if (this.owners.get(ov.volumeId) === conn) this.owners.delete(ov.volumeId);
          opened.delete(ov.volumeId);
          const err = asTidemarkError(e);
          // `detail` (what is configured instead) is for our log only, never for the peer.
          log.warn({ volume: ov.volumeId, code: err.code, err: err.message, ...(err.context.detail === undefined ? {} : { detail: err.context.detail }) }, 'volume refused');
          await conn.send({ error: { code: err.code, message: err.message, volumeId: ov.volumeId, seq: 0, retryable: err.retryable } });
        }
      } else if ('diffBegin' in msg) {
        const dir = opened.get(msg.diffBegin.volumeId);
        if (dir === undefined || this.owners.get(msg.diffBegin.volumeId) !== conn) {
          throw tmError('TM_ERR_PROTOCOL', `differential for volume ${msg.diffBegin.volumeId} that was not opened on this connection`, { volume: msg.diffBegin.volumeId });
        }
        if (msg.diffBegin.seq > this.sink.storedSeq(msg.diffBegin.volumeId)) await this.admit(conn, msg.diffBegin.volumeId, log);
        // Taken over while held: not a byte more of this volume from here (the newer connection writes it).
        if (this.owners.get(msg.diffBegin.volumeId) !== conn) throw tmError('TM_ERR_CLOSED', `volume ${msg.diffBegin.volumeId} was taken over by a newer connection`, { volume: msg.diffBegin.volumeId });
        session.reading = this.receiveDiff(conn, msg.diffBegin, dir, log, session.commits);
        try {
          await session.reading;
        } finally {
          session.reading = null;
        }
      } else if ('hashQuery' in msg) {
        const q = msg.hashQuery;
        if (!opened.has(q.volumeId) || this.owners.get(q.volumeId) !== conn) throw tmError('TM_ERR_PROTOCOL', `hash query for volume ${q.volumeId} that this connection does not send`, { volume: q.volumeId });
        this.answer(conn, q, payload, log);
      } else {
        throw tmError('TM_ERR_PROTOCOL', `unexpected ${msg.body} from ${peer.name}`, { peer: peer.name });
      }
    }
  }

  /** Answer a hash query (not awaited: it may wait for differentials still on their way). */
  private answer(conn: FramedConnection, q: HashQuery, payload: Buffer, log: Logger): void {
    this.sink.answerQuery(q, payload).then(
      (a) => conn.send({ hashAnswer: a }),
      (e: unknown) => {
        const err = asTidemarkError(e);
        log.warn({ volume: q.volumeId, code: err.code, err: err.message }, 'hash query failed');
        return conn.send({ hashAnswer: { volumeId: q.volumeId, requestId: q.requestId, differing: [], errorCode: err.code, errorMessage: err.message } });
      },
    ).catch(() => {});
  }

  private async receiveDiff(conn: FramedConnection, begin: DiffBegin, dir: string, log: Logger, commits: CommitQueue): Promise<void> {
    const { volumeId, seq } = begin;
    // Stored, or read whole and committing now on this connection.
    const durable = Math.max(this.sink.storedSeq(volumeId), commits.queuedSeq.get(volumeId) ?? -1);
    if (seq > durable + 1) {
      throw tmError('TM_ERR_SEQUENCE_GAP', `volume ${volumeId}: got seq ${seq}, expected ${durable + 1}`, { volume: volumeId, seq });
    }
    // Bounded before anything is written or allocated: every extent lies in the volume, the total is capped.
    const geometry = this.sink.geometryOf(volumeId);
    checkDiffSize(volumeId, seq, { extentCount: begin.extentCount }, this.maxDiffBytes, geometry.blockSize);
    // A retransmission of something already durable: read past it and acknowledge again (idempotent).
    const duplicate = seq <= durable;
    const t0 = Date.now();
    let writer = duplicate ? null : await HrlWriter.create(dir, {
      volumeId, seq, startTimeMs: begin.startTimeMs, endTimeMs: begin.endTimeMs, consistency: begin.consistency,
      tags: begin.tags, flags: begin.flags, ...this.sink.geometryOf(volumeId),
    }, { keep: true });
    let rawBytes = 0;
    let storedBytes = 0;
    let payloadBytes = 0; // received on the wire for this differential, moved to bytesRefused if it is refused
    // Several extents are transformed at once (compression runs on other threads) and appended in order.
    const inFlight: Array<Promise<Transformed & { release?: () => void }>> = [];
    const appendNext = async (): Promise<void> => {
      const out = await inFlight.shift()!;
      storedBytes += out.stored.length;
      await writer!.append(out.record, out.stored, out.storedCrc, out.release);
    };
    try {
      for (let i = 0; i < begin.extentCount; i++) {
        const { msg, payload, payloadCrc, release } = await conn.expect('extent');
        const e: ExtentRecord = { offset: msg.extent.offset, length: msg.extent.length, crc32c: msg.extent.crc32c, compression: msg.extent.compression, storedLength: msg.extent.storedLength };
        checkExtent(e, geometry, volumeId, seq);
        if (payload.length !== e.storedLength) throw tmError('TM_ERR_PROTOCOL', `volume ${volumeId} seq ${seq}: extent at ${e.offset} carries ${payload.length} bytes, declares ${e.storedLength}`, { volume: volumeId, seq });
        rawBytes += e.length;
        checkDiffSize(volumeId, seq, { bytes: rawBytes }, this.maxDiffBytes, geometry.blockSize);
        payloadBytes += payload.length;
        if (!writer) {
          release?.();
          continue;
        }
        // A pooled payload goes back to the pool once transformed into other bytes (compressed); one stored
        // as is goes with the kept extent, whose consumer releases it when done (the master target's
        // applier, after its commit), or to the collector.
        const out = this.sink.transform(volumeId, seq, e, payload, payloadCrc).then((t) => {
          if (t.stored.buffer !== payload.buffer) {
            release?.();
            return t;
          }
          return { ...t, release };
        });
        out.catch(() => {}); // a failure is awaited in order by appendNext
        inFlight.push(out);
        if (inFlight.length >= TRANSFORM_DEPTH) await appendNext();
      }
      while (inFlight.length > 0) await appendNext();
      const { msg } = await conn.expect('diffEnd');
      const end = msg.diffEnd;
      if (end.seq !== seq || end.extentCount !== begin.extentCount) throw tmError('TM_ERR_PROTOCOL', `DiffEnd for ${end.seq} does not close ${seq}`, { volume: volumeId, seq });
      this.stats.bytesReceived += payloadBytes;
      payloadBytes = 0;
      if (writer) {
        if (writer.digestSoFar !== end.extentDigest) {
          throw tmError('TM_ERR_EXTENT_CHECKSUM', `volume ${volumeId} seq ${seq}: extent list digest mismatch`, { volume: volumeId, seq });
        }
        const readMs = Date.now() - t0;
        // Committed behind the ones read before it while the next one is read (CommitQueue).
        const w = writer;
        const commit = async (): Promise<void> => {
          const c0 = Date.now();
          await w.commit();
          await this.sink.committed(volumeId, seq, { rawBytes, storedBytes, begin, diff: w.diff() });
          this.stats.diffsReceived++;
          log.info({ volume: volumeId, seq, rawBytes, storedBytes, readMs, commitMs: Date.now() - c0 }, 'differential durable');
        };
        const failed = async (e: unknown, first: boolean): Promise<void> => {
          await w.abort();
          if (!first) return;
          const err = named(asTidemarkError(e), volumeId, seq);
          log.warn({ code: err.code, err: err.message, ...err.context }, 'commit failed; connection refused');
          await conn.refuse(err, volumeId, seq);
        };
        writer = null; // the queue owns it now: aborted there if its commit fails
        await commits.add(volumeId, seq, commit, failed);
      } else {
        this.stats.duplicatesSkipped++;
        log.info({ volume: volumeId, seq, rawBytes, duplicate: true }, 'retransmitted differential skipped');
        await conn.send({ ack: { volumeId, durableSeq: this.sink.ackedSeq(volumeId) } });
      }
    } catch (e) {
      await writer?.abort();
      const err = asTidemarkError(e);
      // Counted once the differential is read whole; cut short, it went through (a lost connection) or was refused.
      if (err.code === 'TM_ERR_CONNECTION' || err.code === 'TM_ERR_CLOSED') this.stats.bytesReceived += payloadBytes;
      else if (payloadBytes > 0 || err.code === 'TM_ERR_DIFF_TOO_LARGE') {
        this.stats.bytesRefused += payloadBytes;
        this.stats.diffsRefused++;
      }
      // Named for the sender, which sets this volume aside (and backs off) rather than resending it at once.
      throw named(err, volumeId, seq);
    }
  }

  /** Acknowledge (cumulatively) on the connection that currently sends this volume, if any. */
  ack(volumeId: string, seq: number): void {
    const conn = this.acking.get(volumeId);
    if (conn && !conn.closed) void conn.send({ ack: { volumeId, durableSeq: seq } }).catch(() => {});
  }

  /** The sink's flow state changed: tell the peers that listen, wake held differentials. */
  setFlow(next: FlowState): void {
    const before = new Set(this.flow.paused ? this.flow.volumes : []);
    this.flow = { ...next, volumes: [...next.volumes] };
    const after = new Set(next.paused ? next.volumes : []);
    const changed = [...new Set([...before, ...after])].filter((v) => before.has(v) !== after.has(v));
    for (const conn of this.signalled) for (const v of changed) void this.signalVolume(conn, v, after.has(v)).catch(() => {});
    for (const wake of [...this.flowWaiters]) wake();
  }

  /** A new connection learns which volumes are paused now. */
  private async signal(conn: FramedConnection): Promise<void> {
    if (this.flow.paused) for (const v of this.flow.volumes) await this.signalVolume(conn, v, true);
  }

  private async signalVolume(conn: FramedConnection, volumeId: string, paused: boolean): Promise<void> {
    await conn.send({ backpressure: { volumeId, paused, reason: paused ? this.flow.reason : '' } });
  }

  /**
   * Before a new differential: hold it while the sink is full, or paused and the peer cannot be told
   * (an older peer then waits on TCP flow control, as before); then wait the slow-down delay, if any.
   */
  private async admit(conn: FramedConnection, volumeId: string, log: Logger): Promise<void> {
    const held = (): boolean => this.flow.paused && this.flow.volumes.includes(volumeId);
    const blocked = (): boolean => !conn.closed && (this.flow.exhausted === true || (held() && (this.flow.full || !this.signalled.has(conn))));
    const delayed = blocked() || this.flow.delayMs > 0;
    if (blocked()) log.info({ full: this.flow.full, reason: this.flow.reason }, 'holding differentials until there is room');
    while (blocked()) await this.flowChange(HOLD_POLL_MS);
    if (this.flow.delayMs > 0 && !conn.closed) await this.flowChange(this.flow.delayMs, false);
    if (delayed) this.stats.diffsDelayed++;
  }

  /** Resolves after `ms`, or sooner when the flow state changes (if `wake`). */
  private flowChange(ms: number, wake = true): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.flowWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      if (wake) this.flowWaiters.add(done);
    });
  }

  /**
   * Tell the sender of this volume to run a resync, if it is connected and takes ResyncNeeded; false if
   * not (the sink tells it at its next OpenVolume).
   */
  async requestResync(volumeId: string, reason: string): Promise<boolean> {
    const conn = this.owners.get(volumeId);
    if (!conn || conn.closed || !this.resyncCapable.has(conn)) return false;
    await conn.send({ resyncNeeded: { volumeId, reason, regression: false, durableSeq: this.sink.ackedSeq(volumeId) } });
    return true;
  }

  /**
   * Drop the connection sending this volume, so its sender reconnects and resends after the last ack;
   * resolves once what it had read is committed (or failed), so nothing of it lands after the caller's
   * next step (a discard of damaged staged files).
   */
  async dropVolume(volumeId: string): Promise<void> {
    const conn = this.owners.get(volumeId);
    if (conn) await this.quiesce(conn);
  }

}
