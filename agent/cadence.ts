// When the agent's next cycle is due. Each unit (a volume on its own, or a consistency group) has its own
// interval: a data-mode stream is collected more often than a volume that is read from a capture.
// Timed on the monotonic clock: a wall clock stepped back (NTP, a VM resumed) by N s would otherwise hold
// every cycle for N s (replication stalls), and one stepped forward would skip intervals.
import { performance } from 'node:perf_hooks';

/** Now on the monotonic clock (ms), the time base of `nextAt`. */
export const monotonicMs = (): number => performance.now();

export interface Cadenced {
  /** When the unit is due next (ms on the monotonic clock, `monotonicMs`). */
  nextAt: number;
  /** Its last run left more than one differential's worth: it goes again at once. */
  more: boolean;
}

/** Milliseconds from `now` until the first unit is due (0: one is due now); `idleMs` when there is none. */
export function nextDue(units: readonly Cadenced[], now: number, idleMs = 1000): number {
  if (units.length === 0) return idleMs;
  if (units.some((u) => u.more)) return 0;
  return Math.max(0, Math.min(...units.map((u) => u.nextAt)) - now);
}

/**
 * Whether a unit runs in this cycle: its interval passed, its last run left more than one differential
 * (only that unit goes again at once, not every unit), or an operator woke them all.
 */
export function isDue(u: Cadenced, now: number, woken: boolean): boolean {
  return woken || u.more || now >= u.nextAt;
}

/**
 * At most one event per `ms` (a freeze, a stream cut), on the monotonic clock: a wall clock stepped back
 * by N s would otherwise hold the next one for N s.
 */
export class MinGap {
  private last = -Infinity;

  constructor(readonly ms: number) {}

  ready(): boolean {
    return monotonicMs() - this.last >= this.ms;
  }

  mark(): void {
    this.last = monotonicMs();
  }
}
