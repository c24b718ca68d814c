// The process server's bandwidth cap towards its master targets: one token bucket shared by every
// forwarder, refilled at the rate the schedule gives for the current local time, and a fair queue of
// the volumes waiting for it.
//
// Fairness is max-min among volumes, by start-time fair queueing: each request gets a start tag, the
// larger of the volume's previous finish tag and the start tag of the last request let through, and the
// smallest start tag goes first. A volume that asks for less than its share is never behind anyone (its
// tag is pulled up to the present, so it also cannot bank credit while idle); backlogged volumes
// advance their tags by the bytes they send, so they split what is left evenly. Because tags are kept
// per volume, a forwarder that sends its volumes one at a time, round robin, still gets one share per
// volume, not one per forwarder.
//
// Tokens are taken only when a request is let through, just before its bytes are written: a waiter
// holds nothing, and a forwarder whose master target is slow or gone simply asks less often (and
// withdraws its waiter through the AbortSignal when its session ends).
import { tmError, isTidemarkError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { nextBoundary, parseSchedule, ruleAt, type Rule, type ThrottleConfig } from './schedule.js';

/** The bucket holds at most this many seconds of the current rate: the largest burst after idling. */
const BURST_SECONDS = 0.5;
/** setTimeout fires at once beyond 2^31-1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface Clock {
  now(): number;
  /** Run `fn` after `ms`; returns a cancel function. */
  setTimer(fn: () => void, ms: number): () => void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface ThrottleStatus {
  /** Rate in force now; null: unlimited. */
  rateBytesPerSec: number | null;
  /** The schedule rule in force, or null when the default rate applies. */
  activeRule: { index: number; days: string; from: string; to: string } | null;
  waitingVolumes: string[];
  /** Stored bytes let through since start. */
  bytesPassed: number;
}

interface Waiter {
  volumeId: string;
  bytes: number;
  start: number;
  finish: number;
  order: number;
  resolve(): void;
  reject(e: Error): void;
  detach(): void;
}

/** The rate between two instants at which the schedule may change. */
interface Segment {
  from: number;
  until: number;
  rule: Rule | null;
  rate: number | null;
}

export class Throttle {
  private readonly rules: Rule[];
  private readonly defaultRate: number | null;
  private segment: Segment | null = null;
  private tokens = 0;
  private last: number;
  private readonly waiters: Waiter[] = [];
  private readonly finishTags = new Map<string, number>();
  private virtualTime = 0;
  private order = 0;
  private cancelTimer: (() => void) | null = null;
  private closed = false;
  bytesPassed = 0;

  /** `cfg` null: no cap at all (pace resolves at once, and counts). Throws TM_ERR_CONFIG_INVALID. */
  constructor(cfg: ThrottleConfig | null, private readonly clock: Clock = realClock, private readonly log?: Logger) {
    this.rules = cfg ? parseSchedule(cfg) : [];
    this.defaultRate = cfg?.rateBytesPerSec ?? null;
    this.last = clock.now();
  }

  /**
   * Wait until `bytes` of `volumeId` may go on the wire. Rejects with TM_ERR_CLOSED after close(), or
   * with the signal's reason when it aborts (the waiter leaves the queue and takes no tokens).
   */
  pace(volumeId: string, bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.closed) return Promise.reject(tmError('TM_ERR_CLOSED', 'throttle closed'));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const start = Math.max(this.virtualTime, this.finishTags.get(volumeId) ?? 0);
    const finish = start + bytes;
    this.finishTags.set(volumeId, finish);
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiters.indexOf(w);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        // Give the volume back its place, unless it queued more behind this request meanwhile.
        if (this.finishTags.get(volumeId) === finish) this.finishTags.set(volumeId, start);
        reject(abortError(signal!));
        this.pump(); // the head may have changed
      };
      const w: Waiter = {
        volumeId, bytes, start, finish, order: this.order++, resolve, reject,
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
      this.pump();
    });
  }

  status(): ThrottleStatus {
    const seg = this.segmentAt(this.clock.now());
    const r = seg.rule;
    return {
      rateBytesPerSec: seg.rate,
      activeRule: r ? { index: r.index, days: r.days, from: r.from, to: r.to } : null,
      waitingVolumes: [...new Set(this.waiters.map((w) => w.volumeId))].sort(),
      bytesPassed: this.bytesPassed,
    };
  }

  /** Idempotent; waiters are rejected with TM_ERR_CLOSED. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cancelTimer?.();
    this.cancelTimer = null;
    for (const w of this.waiters.splice(0)) {
      w.detach();
      w.reject(tmError('TM_ERR_CLOSED', 'throttle closed'));
    }
  }

  private segmentAt(ms: number): Segment {
    const s = this.segment;
    if (s && ms >= s.from && ms < s.until) return s;
    const rule = ruleAt(this.rules, ms);
    const next: Segment = { from: ms, until: nextBoundary(this.rules, ms), rule, rate: rule ? rule.rateBytesPerSec : this.defaultRate };
    if (s && s.rate !== next.rate) this.log?.info({ rateBytesPerSec: next.rate, rule: rule?.index ?? null }, 'throttle rate changed');
    this.segment = next;
    return next;
  }

  /** Add the tokens earned since the last refill, segment by segment (the rate may have changed). */
  private refill(now: number): void {
    if (now < this.last) this.last = now; // the clock was set back: earn nothing for it
    while (this.last < now) {
      const seg = this.segmentAt(this.last);
      const end = Math.min(now, seg.until);
      if (seg.rate !== null) this.tokens = Math.min(seg.rate * BURST_SECONDS, this.tokens + ((end - this.last) * seg.rate) / 1000);
      this.last = end;
    }
  }

  /** Let through whatever the bucket allows, in start-tag order; then sleep until the head can go. */
  private pump(): void {
    if (this.closed) return;
    this.cancelTimer?.();
    this.cancelTimer = null;
    const now = this.clock.now();
    this.refill(now);
    const seg = this.segmentAt(now);
    if (seg.rate !== null) this.tokens = Math.min(this.tokens, seg.rate * BURST_SECONDS);
    while (this.waiters.length > 0) {
      let head = 0;
      for (let i = 1; i < this.waiters.length; i++) {
        const a = this.waiters[i]!;
        const b = this.waiters[head]!;
        if (a.start < b.start || (a.start === b.start && a.order < b.order)) head = i;
      }
      const w = this.waiters[head]!;
      if (seg.rate !== null) {
        // A request larger than the bucket goes when the bucket is full, and leaves it in debt.
        const need = Math.min(w.bytes, seg.rate * BURST_SECONDS);
        if (this.tokens < need) {
          const wait = Math.max(1, Math.ceil(((need - this.tokens) * 1000) / seg.rate));
          this.cancelTimer = this.clock.setTimer(() => this.pump(), Math.min(wait, Math.max(1, seg.until - now), MAX_TIMER_MS));
          return;
        }
        this.tokens -= w.bytes;
      }
      this.waiters.splice(head, 1);
      this.virtualTime = w.start;
      this.bytesPassed += w.bytes;
      w.detach();
      w.resolve();
    }
  }
}

function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return isTidemarkError(r) ? r : tmError('TM_ERR_CONNECTION', 'send abandoned: the session ended');
}
