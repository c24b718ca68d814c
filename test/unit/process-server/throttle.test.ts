// The process server's throttle on an injected clock: max-min fair shares among volumes, the rate the
// schedule gives at each local time (switching at rule boundaries), and strict validation.
import t from 'tap';
import { validateConfig } from '../../../common/config.js';
import { psConfigSchema } from '../../../process-server/config.js';
import { nextBoundary, parseSchedule, ruleAt, type ThrottleConfig } from '../../../process-server/schedule.js';
import { Throttle, type Clock } from '../../../process-server/throttle.js';
import { caught } from '../caught.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Time moves only when the test says; timers fire in order, with promise chains settled between. */
class FakeClock implements Clock {
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private ids = 0;
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  setTimer(fn: () => void, ms: number): () => void {
    const id = this.ids++;
    this.timers.push({ at: this.t + ms, fn, id });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(resolve, ms));
  }
  /** Run until `until`, firing every timer due on the way. */
  async runUntil(until: number): Promise<void> {
    for (;;) {
      await settle();
      const next = this.timers.reduce<{ at: number; fn: () => void; id: number } | null>((a, b) => (a === null || b.at < a.at ? b : a), null);
      if (next === null || next.at > until) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = until;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
}

/** Bytes let through per volume, with the instant of each grant. */
class Meter {
  readonly grants: { volume: string; bytes: number; at: number }[] = [];
  constructor(private readonly clock: FakeClock) {}
  record(volume: string, bytes: number): void {
    this.grants.push({ volume, bytes, at: this.clock.now() });
  }
  bytes(volume: string, from: number, to: number): number {
    return this.grants.filter((g) => g.volume === volume && g.at >= from && g.at < to).reduce((n, g) => n + g.bytes, 0);
  }
  total(from: number, to: number): number {
    return this.grants.filter((g) => g.at >= from && g.at < to).reduce((n, g) => n + g.bytes, 0);
  }
}

/** A sender that always has more to send: asks again as soon as it is let through. */
function greedy(th: Throttle, meter: Meter, volumes: string[], chunk: number, stop: { done: boolean }): Promise<void> {
  return (async () => {
    for (let i = 0; !stop.done; i++) {
      const v = volumes[i % volumes.length]!; // one at a time, round robin: as a forwarder sends
      await th.pace(v, chunk).catch(() => { stop.done = true; });
      if (!stop.done) meter.record(v, chunk);
    }
  })();
}

/** Monday 1 January 2024, local time. */
const MONDAY = (h: number, m = 0, s = 0): number => new Date(2024, 0, 1, h, m, s).getTime();

t.test('three volumes, one wanting little: it gets what it asks, the other two split the rest evenly', async (t) => {
  const clock = new FakeClock(MONDAY(12));
  const th = new Throttle({ rateBytesPerSec: MiB }, clock);
  const meter = new Meter(clock);
  const stop = { done: false };
  const a = greedy(th, meter, ['a'], 64 * KiB, stop);
  const b = greedy(th, meter, ['b'], 64 * KiB, stop);
  // "c" has 16 KiB to send every 100 ms: 160 KiB/s, well under a third of 1 MiB/s.
  const t0 = clock.now();
  const c = (async () => {
    for (let k = 1; !stop.done; k++) {
      await th.pace('c', 16 * KiB).catch(() => { stop.done = true; });
      meter.record('c', 16 * KiB);
      await clock.sleep(Math.max(0, t0 + k * 100 - clock.now()));
    }
  })();
  await clock.runUntil(t0 + 60_000);
  stop.done = true;
  th.close();
  await clock.runUntil(clock.now() + 1000); // wakes the small sender from its sleep
  await Promise.all([a, b, c]);
  const from = t0 + 5_000; // past the first seconds
  const to = t0 + 60_000;
  const secs = (to - from) / 1000;
  const rate = (v: string): number => meter.bytes(v, from, to) / secs;
  t.ok(Math.abs(meter.total(from, to) / secs / MiB - 1) < 0.02, `total ${(meter.total(from, to) / secs / KiB).toFixed(0)} KiB/s is the cap, 1024 KiB/s`);
  t.ok(Math.abs(rate('c') / (160 * KiB) - 1) < 0.05, `the small volume got what it asked: ${(rate('c') / KiB).toFixed(0)} of 160 KiB/s`);
  const fair = (MiB - 160 * KiB) / 2;
  for (const v of ['a', 'b']) t.ok(Math.abs(rate(v) / fair - 1) < 0.05, `${v} got ${(rate(v) / KiB).toFixed(0)} KiB/s, its fair share ${(fair / KiB).toFixed(0)}`);
});

t.test('shares are per volume, not per forwarder: four volumes sent one at a time vs one volume alone', async (t) => {
  const clock = new FakeClock(MONDAY(12));
  const th = new Throttle({ rateBytesPerSec: 2 * MiB }, clock);
  const meter = new Meter(clock);
  const stop = { done: false };
  const mt1 = greedy(th, meter, ['v1', 'v2', 'v3', 'v4'], 256 * KiB, stop);
  const mt2 = greedy(th, meter, ['x'], 256 * KiB, stop);
  const t0 = clock.now();
  await clock.runUntil(t0 + 40_000);
  stop.done = true;
  th.close();
  await Promise.all([mt1, mt2]);
  const share = (v: string): number => meter.bytes(v, t0, t0 + 40_000) / meter.total(t0, t0 + 40_000);
  for (const v of ['v1', 'v2', 'v3', 'v4', 'x']) t.ok(Math.abs(share(v) - 0.2) < 0.02, `${v}: ${(share(v) * 100).toFixed(1)}% of the bandwidth (a fifth each)`);
});

t.test('a waiter whose session ended leaves the queue and takes no tokens', async (t) => {
  const clock = new FakeClock(MONDAY(12));
  const th = new Throttle({ rateBytesPerSec: 100 * KiB }, clock);
  const meter = new Meter(clock);
  const stop = { done: false };
  const live = greedy(th, meter, ['live'], 10 * KiB, stop);
  const ended = new AbortController();
  const dead = th.pace('dead', 50 * KiB, ended.signal);
  t.same(th.status().waitingVolumes.includes('dead'), true, 'the dead master target\'s volume is waiting');
  ended.abort();
  await t.rejects(dead, { code: 'TM_ERR_CONNECTION' }, 'its pace() is abandoned');
  const t0 = clock.now();
  await clock.runUntil(t0 + 20_000);
  stop.done = true;
  th.close();
  await live;
  t.notOk(th.status().waitingVolumes.includes('dead'), 'no longer waiting');
  t.ok(Math.abs(meter.bytes('live', t0, t0 + 20_000) / 20 / (100 * KiB) - 1) < 0.03, 'the live volume gets the whole rate');
});

t.test('the schedule switches the rate at rule boundaries, in local time', async (t) => {
  const cfg: ThrottleConfig = { rateBytesPerSec: MiB, schedule: [{ days: 'mon-fri', from: '08:00', to: '18:00', rateBytesPerSec: 128 * KiB }] };
  const clock = new FakeClock(MONDAY(7, 59));
  const th = new Throttle(cfg, clock);
  const meter = new Meter(clock);
  const stop = { done: false };
  const g = greedy(th, meter, ['v'], 32 * KiB, stop);
  t.same(th.status().activeRule, null, 'before 08:00 the default rate applies');
  t.equal(th.status().rateBytesPerSec, MiB);
  await clock.runUntil(MONDAY(8));
  await clock.runUntil(MONDAY(8, 0, 30));
  t.same(th.status().activeRule, { index: 0, days: 'mon-fri', from: '08:00', to: '18:00' }, 'from 08:00 the rule applies');
  t.equal(th.status().rateBytesPerSec, 128 * KiB);
  await clock.runUntil(MONDAY(8, 1));
  const before = meter.bytes('v', MONDAY(7, 59, 10), MONDAY(8)) / 50;
  const after = meter.bytes('v', MONDAY(8, 0, 1), MONDAY(8, 1)) / 59;
  t.ok(Math.abs(before / MiB - 1) < 0.03, `07:59:10-08:00 at ${(before / KiB).toFixed(0)} KiB/s (1024)`);
  t.ok(Math.abs(after / (128 * KiB) - 1) < 0.03, `08:00:01-08:01 at ${(after / KiB).toFixed(0)} KiB/s (128)`);
  t.ok(meter.bytes('v', MONDAY(8), MONDAY(8, 0, 1)) <= 128 * KiB + MiB / 2, 'no burst at the switch beyond half a second of the old rate');
  // And back at 18:00.
  clock.t = MONDAY(17, 59, 50);
  await clock.runUntil(MONDAY(18, 0, 20));
  const evening = meter.bytes('v', MONDAY(18, 0, 1), MONDAY(18, 0, 20)) / 19;
  t.ok(Math.abs(evening / MiB - 1) < 0.05, `after 18:00 back to ${(evening / KiB).toFixed(0)} KiB/s (1024)`);
  t.same(th.status().activeRule, null);
  stop.done = true;
  th.close();
  await g;
  t.ok(th.status().bytesPassed > 0, 'bytesPassed counts what went through');
});

t.test('rule lookup: weekdays, first match wins, 24:00, wrapping day ranges, next boundary', async (t) => {
  const rules = parseSchedule({
    schedule: [
      { days: 'sat,sun', from: '00:00', to: '24:00', rateBytesPerSec: 1e6 },
      { days: 'Mon-Fri', from: '08:00', to: '18:00', rateBytesPerSec: 2e6 },
      { from: '07:00', to: '09:00', rateBytesPerSec: 3e6 },
      { days: 'fri-mon', from: '22:00', to: '23:30:30', rateBytesPerSec: 4e6 },
    ],
  });
  const sat = (h: number, m = 0): number => new Date(2024, 0, 6, h, m).getTime();
  t.equal(ruleAt(rules, sat(12))?.index, 0, 'Saturday noon: the weekend rule');
  t.equal(ruleAt(rules, sat(23, 59))?.index, 0, 'Saturday 23:59: still the weekend (to 24:00)');
  t.equal(ruleAt(rules, MONDAY(8, 30))?.index, 1, 'Monday 08:30: the weekday rule comes first');
  t.equal(ruleAt(rules, MONDAY(7, 30))?.index, 2, 'Monday 07:30: the every-day rule');
  t.equal(ruleAt(rules, MONDAY(18))?.index ?? null, null, 'Monday 18:00 (the end is exclusive): default');
  t.equal(ruleAt(rules, MONDAY(23, 30, 29))?.index, 3, 'fri-mon includes Monday; seconds count');
  t.equal(ruleAt(rules, MONDAY(23, 30, 30))?.index ?? null, null);
  t.equal(ruleAt(rules, new Date(2024, 0, 3, 22, 30).getTime())?.index ?? null, null, 'Wednesday is not in fri-mon');
  t.equal(nextBoundary(rules, MONDAY(7, 30)), MONDAY(8), 'next change after 07:30 is at 08:00');
  t.equal(nextBoundary(rules, MONDAY(18)), MONDAY(22), 'after 18:00: 22:00');
  t.equal(nextBoundary([], MONDAY(12)), Infinity, 'no rules: never');
});

t.test('no throttle: pace() lets everything through at once and counts it', async (t) => {
  const th = new Throttle(null, new FakeClock(MONDAY(12)));
  await th.pace('v', 10 * MiB);
  t.strictSame(th.status(), { rateBytesPerSec: null, activeRule: null, waitingVolumes: [], bytesPassed: 10 * MiB });
  th.close();
  await t.rejects(th.pace('v', 1), { code: 'TM_ERR_CLOSED' }, 'closed: new work is refused');
});

t.test('a bad schedule is rejected with an error that names the key and says why', async (t) => {
  const ps = (throttle: unknown): unknown => ({
    name: 'ps-1', cacheDir: 'c', tls: { ca: 'a', cert: 'b', key: 'c' },
    masterTargets: [{ name: 'mt-1', port: 7420 }], volumes: [{ id: 'v', agent: 'a', masterTarget: 'mt-1' }], throttle,
  });
  const cases: [unknown, RegExp][] = [
    [{ rateBytesPerSec: 0 }, /throttle\.rateBytesPerSec: rateBytesPerSec must be a number of bytes per second of at least 1024, not 0/],
    [{ schedule: [{ days: 'mon-fry', from: '08:00', to: '18:00', rateBytesPerSec: 1e6 }] }, /throttle\.schedule\[0\]\.days: "fry" is not a day/],
    [{ schedule: [{ days: 'mon-fri', from: '8am', to: '18:00', rateBytesPerSec: 1e6 }] }, /throttle\.schedule\[0\]\.from: "8am" is not a time of day; use HH:MM/],
    [{ schedule: [{ from: '08:00', to: '24:01', rateBytesPerSec: 1e6 }] }, /throttle\.schedule\[0\]\.to: "24:01" is not a time of day/],
    [{ schedule: [{ from: '24:00', to: '24:00', rateBytesPerSec: 1e6 }] }, /throttle\.schedule\[0\]\.from: "24:00" is not a time of day/],
    [{ schedule: [{ from: '22:00', to: '06:00', rateBytesPerSec: 1e6 }] }, /throttle\.schedule\[0\]\.to: "to" \(06:00\) must be after "from" \(22:00\); for a period across midnight use two rules/],
    [{ schedule: [{ days: 'mon,,fri', from: '08:00', to: '09:00', rateBytesPerSec: 1e6 }] }, /throttle\.schedule\[0\]\.days: empty item/],
    [{ schedule: [{ from: '08:00', to: '09:00', rateBytesPerSec: 1e6, rateBytesPerSecond: 5 }] }, /unknown key "throttle\.schedule\.0\.rateBytesPerSecond".*did you mean "rateBytesPerSec"\?/],
  ];
  for (const [throttle, message] of cases) {
    const e = caught(() => validateConfig(psConfigSchema, ps(throttle), 'ps.json'));
    t.match(e?.code, /^TM_ERR_CONFIG_(INVALID|UNKNOWN_KEY)$/, JSON.stringify(throttle));
    t.match(e?.message, message);
  }
  // The Throttle checks what it is given too (a config built in code skips the schema).
  const e = caught(() => new Throttle({ schedule: [{ days: 'weekdays', from: '08:00', to: '18:00', rateBytesPerSec: 1e6 }] }));
  t.equal(e?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(e?.message, /throttle\.schedule\[0\]\.days: "weekdays" is not a day/);
  const good = validateConfig(psConfigSchema, ps({ rateBytesPerSec: 50e6, schedule: [{ days: 'mon-fri', from: '08:00', to: '18:00', rateBytesPerSec: 10e6 }] }));
  t.same(good.throttle, { rateBytesPerSec: 50e6, schedule: [{ days: 'mon-fri', from: '08:00', to: '18:00', rateBytesPerSec: 10e6 }] }, 'the example from the docs is valid');
});
