// Refused connections are logged, but never faster than an operator can read: anyone who can reach the
// port can make refusals, and one log line per garbage connection let a scanner fill the disk. The first
// BURST refusals of each interval are logged in full; the rest are counted and summarised once, with the
// addresses they came from.
import type { Logger } from './log.js';

export const REFUSAL_LOG_BURST = 10;
export const REFUSAL_LOG_INTERVAL_MS = 10_000;
/** Addresses listed in a summary line; the count says how many more there were. */
const SUMMARY_ADDRESSES = 10;

export class RefusalLog {
  private windowStart = 0;
  private logged = 0;
  private suppressed = 0;
  private readonly codes = new Map<string, number>();
  private readonly addresses = new Set<string>();
  private flushTimer: NodeJS.Timeout | null = null;
  /** Every refusal, logged or not (for status and tests). */
  total = 0;

  constructor(private readonly log: Logger, private readonly burst = REFUSAL_LOG_BURST, private readonly intervalMs = REFUSAL_LOG_INTERVAL_MS) {}

  refused(code: string, address: string, message: string, extra: Record<string, unknown> = {}): void {
    this.total++;
    const now = Date.now();
    if (now - this.windowStart >= this.intervalMs) {
      this.flush();
      this.windowStart = now;
    }
    if (this.logged < this.burst) {
      this.logged++;
      this.log.warn({ code, peer: address, err: message, ...extra }, 'peer refused');
      return;
    }
    this.suppressed++;
    this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    this.addresses.add(address.replace(/:\d+$/, ''));
    // The summary comes at the end of the interval even if no further refusal arrives to trigger it.
    this.flushTimer ??= setTimeout(() => { this.flushTimer = null; this.flush(); this.windowStart = Date.now(); }, this.intervalMs - (now - this.windowStart));
    this.flushTimer.unref();
  }

  /** Log the summary of what this interval suppressed, if anything. */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.suppressed > 0) {
      const addrs = [...this.addresses];
      this.log.warn({
        suppressed: this.suppressed,
        codes: Object.fromEntries(this.codes),
        addresses: addrs.slice(0, SUMMARY_ADDRESSES),
        moreAddresses: Math.max(0, addrs.length - SUMMARY_ADDRESSES),
      }, 'more peers refused (not logged one by one)');
    }
    this.logged = 0;
    this.suppressed = 0;
    this.codes.clear();
    this.addresses.clear();
  }

  close(): void {
    this.flush();
  }
}
