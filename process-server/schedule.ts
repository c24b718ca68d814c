// The bandwidth schedule of the process server's throttle: a default rate and rules ("mon-fri
// 08:00-18:00 at 10 MB/s") in the machine's local time. Parsed and validated strictly here, for both the
// config schema (a clear TM_ERR_CONFIG_INVALID naming the key) and the Throttle; looked up at run time.
import { z } from 'zod';
import { tmError } from '../common/errors.js';

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
/** Below this a single 1 MiB extent would take over 15 minutes: surely a unit mistake. */
export const MIN_RATE_BYTES_PER_SEC = 1024;

export interface ScheduleRuleConfig {
  days?: string | undefined;
  from: string;
  to: string;
  rateBytesPerSec: number;
}

export interface ThrottleConfig {
  /** Outside every rule; absent: unlimited outside the rules. */
  rateBytesPerSec?: number | undefined;
  schedule?: ScheduleRuleConfig[] | undefined;
}

export interface Rule {
  index: number;
  /** As configured, for status and logs. */
  days: string;
  from: string;
  to: string;
  rateBytesPerSec: number;
  /** Bit d set: the rule applies on weekday d (0 = Sunday, as Date.getDay). */
  dayMask: number;
  fromSec: number;
  toSec: number;
}

/** "mon-fri", "sat,sun", "mon,wed-fri", "fri-mon" (wraps): a bit mask of weekdays. Throws a message. */
export function parseDays(text: string): number {
  let mask = 0;
  const day = (name: string): number => {
    const i = DAY_NAMES.indexOf(name.trim().toLowerCase() as (typeof DAY_NAMES)[number]);
    if (i < 0) throw new Error(`"${name.trim()}" is not a day; use ${DAY_NAMES.join(' ')}, ranges like mon-fri, lists like sat,sun`);
    return i;
  };
  const items = text.split(',');
  for (const item of items) {
    if (item.trim() === '') throw new Error(`empty item in days "${text}"; use e.g. mon-fri or sat,sun`);
    const [a, b, extra] = item.split('-');
    if (extra !== undefined) throw new Error(`"${item.trim()}" is not a day or a range like mon-fri`);
    const first = day(a!);
    const last = b === undefined ? first : day(b);
    for (let d = first; ; d = (d + 1) % 7) {
      mask |= 1 << d;
      if (d === last) break;
    }
  }
  return mask;
}

/** "HH:MM" or "HH:MM:SS", 00:00 .. 24:00 (24:00 only as an end): seconds since midnight. Throws a message. */
export function parseTime(text: string, isEnd: boolean): number {
  const m = /^(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text);
  const bad = (): Error => new Error(`"${text}" is not a time of day; use HH:MM or HH:MM:SS (00:00 to ${isEnd ? '24:00' : '23:59:59'})`);
  if (!m) throw bad();
  const [h, min, s] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  if (min > 59 || s > 59 || h > 24 || (h === 24 && (min > 0 || s > 0 || !isEnd))) throw bad();
  return h * 3600 + min * 60 + s;
}

/** Validated rules in order; the first that covers an instant wins. Throws TM_ERR_CONFIG_INVALID. */
export function parseSchedule(cfg: ThrottleConfig): Rule[] {
  const issue = validateThrottle(cfg)[0];
  if (issue) throw tmError('TM_ERR_CONFIG_INVALID', `throttle.${issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '')}: ${issue.message}`, { key: `throttle.${issue.path.join('.')}` });
  return (cfg.schedule ?? []).map((r, index) => ({
    index,
    days: r.days ?? 'sun-sat',
    from: r.from,
    to: r.to,
    rateBytesPerSec: r.rateBytesPerSec,
    dayMask: parseDays(r.days ?? 'sun-sat'),
    fromSec: parseTime(r.from, false),
    toSec: parseTime(r.to, true),
  }));
}

/** Every problem of a throttle config, with its path below `throttle`. */
function validateThrottle(cfg: ThrottleConfig): { path: (string | number)[]; message: string }[] {
  const issues: { path: (string | number)[]; message: string }[] = [];
  const rate = (v: unknown, path: (string | number)[]): void => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < MIN_RATE_BYTES_PER_SEC) issues.push({ path, message: `rateBytesPerSec must be a number of bytes per second of at least ${MIN_RATE_BYTES_PER_SEC}, not ${JSON.stringify(v)}` });
  };
  if (cfg.rateBytesPerSec !== undefined) rate(cfg.rateBytesPerSec, ['rateBytesPerSec']);
  (cfg.schedule ?? []).forEach((r, i) => {
    const at = (k: string): (string | number)[] => ['schedule', i, k];
    rate(r.rateBytesPerSec, at('rateBytesPerSec'));
    if (r.days !== undefined) {
      try {
        parseDays(r.days);
      } catch (e) {
        issues.push({ path: at('days'), message: (e as Error).message });
      }
    }
    let from = NaN;
    let to = NaN;
    try {
      from = parseTime(r.from, false);
    } catch (e) {
      issues.push({ path: at('from'), message: (e as Error).message });
    }
    try {
      to = parseTime(r.to, true);
    } catch (e) {
      issues.push({ path: at('to'), message: (e as Error).message });
    }
    if (from >= to) issues.push({ path: at('to'), message: `"to" (${r.to}) must be after "from" (${r.from}); for a period across midnight use two rules, e.g. 22:00-24:00 and 00:00-06:00` });
  });
  return issues;
}

/** The config schema of `throttle` (process-server/config.ts). */
export const throttleSchema = z.strictObject({
  rateBytesPerSec: z.number().optional(),
  schedule: z.array(z.strictObject({
    /** Weekdays the rule applies on; default every day. */
    days: z.string().optional(),
    from: z.string(),
    to: z.string(),
    rateBytesPerSec: z.number(),
  })).max(100).optional(),
}).superRefine((cfg, ctx) => {
  for (const issue of validateThrottle(cfg)) ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
});

/** Local weekday and seconds since local midnight of an instant. */
function localDay(ms: number): { weekday: number; sec: number } {
  const d = new Date(ms);
  return { weekday: d.getDay(), sec: d.getHours() * 3600 + d.getMinutes() * 60 + d.getSeconds() };
}

/** The rule in force at `ms`, or null when the default rate applies. */
export function ruleAt(rules: readonly Rule[], ms: number): Rule | null {
  const { weekday, sec } = localDay(ms);
  return rules.find((r) => (r.dayMask & (1 << weekday)) !== 0 && sec >= r.fromSec && sec < r.toSec) ?? null;
}

/** The first instant after `ms` at which a rule starts or ends (Infinity without rules): rates may change there. */
export function nextBoundary(rules: readonly Rule[], ms: number): number {
  let best = Infinity;
  const d = new Date(ms);
  for (let k = 0; k <= 7; k++) {
    const weekday = (d.getDay() + k) % 7;
    for (const r of rules) {
      if ((r.dayMask & (1 << weekday)) === 0) continue;
      for (const sec of [r.fromSec, r.toSec]) {
        // Built from local fields, so a daylight-saving change moves the instant as the wall clock does.
        const at = new Date(d.getFullYear(), d.getMonth(), d.getDate() + k, 0, 0, sec).getTime();
        if (at > ms && at < best) best = at;
      }
    }
    if (best < Infinity) break; // a later day only holds later instants
  }
  return best;
}
