// The process server's bandwidth cap with real daemons: with the pipe kept full, the bytes reaching the
// master target over 30 s are within 10% of the cap; when the schedule rule in force ends, the rate
// switches to the default; and the replica still ends equal to its source.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { makeImage, scratchDir, sha256, sleep } from './helpers.js';

const MiB = 1 << 20;
const RULE_RATE = 2 * MiB;
const DEFAULT_RATE = 4 * MiB;
const SIZE_MIB = 176;
/** Enough to keep the pipe full: ~42 s at 2 MiB/s, then ~12 s at 4 MiB/s, with some left over. */
const DATA_MIB = 160;
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

const hms = (d: Date): string => [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');

t.test('a 2 MiB/s rule and a 4 MiB/s default: each rate holds within 10%, and the rate switches when the rule ends', async (t) => {
  // The rule must start and end on the same local day: close to midnight, wait for the next day.
  const sinceMidnight = (Date.now() - new Date().setHours(0, 0, 0, 0)) / 1000;
  if (sinceMidnight > 86_400 - 120) await sleep((86_400 - sinceMidnight + 5) * 1000);

  const dir = await scratchDir(t, 'throttle');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE_MIB, DATA_MIB);
  const lab = await Lab.create({
    dir,
    volumes: [{ id: 'vol1', source, replica }],
    // One resync window for the whole volume: the pipe never waits for the replica side mid-way.
    agent: { cycleIntervalMs: 500, resyncWindowBytes: 1024 * MiB },
    // Stored bytes = raw bytes, so the cap is what a reader of the logs expects.
    ps: { compression: 'none' },
  });
  t.teardown(() => lab.stopAll());

  // The rule's end is set now, just before the daemons start: room for start-up plus a 30 s window.
  const start = Date.now();
  const ruleEnd = new Date(Math.ceil((start + 48_000) / 1000) * 1000);
  const today = new Date(start);
  const otherDay = DAYS[(today.getDay() + 3) % 7]!;
  const throttle = {
    rateBytesPerSec: DEFAULT_RATE,
    schedule: [
      // Not today: must not apply (a tiny rate would show at once).
      { days: otherDay, from: '00:00', to: '24:00', rateBytesPerSec: 64 * 1024 },
      // In force from before the start until ruleEnd.
      { days: DAYS[today.getDay()]!, from: hms(new Date(Math.max(start - 60_000, new Date(start).setHours(0, 0, 0, 0)))), to: hms(ruleEnd), rateBytesPerSec: RULE_RATE },
    ],
  };
  const psConfig = JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as Record<string, unknown>;
  await fsp.writeFile(lab.configs.ps, JSON.stringify({ ...psConfig, throttle }));
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');

  /**
   * Bytes the process server has sent through its throttle so far (counted per extent as it is written),
   * and when that was read. The master target's receiver counts a differential only once it is read whole,
   * too coarse for a rate at 2 MiB/s.
   */
  const received = async (): Promise<{ at: number; bytes: number }> => {
    const s = await lab.status('ps');
    const fwd = Object.values((s?.forwarders ?? {}) as Record<string, { bytesSent?: number }>);
    return { at: Date.now(), bytes: fwd.length > 0 ? fwd.reduce((n, f) => n + Number(f.bytesSent ?? 0), 0) : NaN };
  };
  const throttleStatus = async (): Promise<Record<string, unknown>> => ((await lab.status('ps'))?.throttle ?? {}) as Record<string, unknown>;

  // Window 1: 30 s under the rule, from a second after the first bytes arrive.
  while (!((await received()).bytes > 0)) {
    if (Date.now() > ruleEnd.getTime() - 33_000) throw new Error('the daemons took too long to start: no time left for a 30 s window under the rule');
    await sleep(200);
  }
  await sleep(1000);
  const a = await received();
  const during = await throttleStatus();
  t.equal(during.rateBytesPerSec, RULE_RATE, 'the PS reports the rule\'s rate');
  t.match(during.activeRule, { index: 1, to: hms(ruleEnd) }, 'and the rule that covers now (not the one for another day)');
  await sleep(a.at + 30_000 - Date.now());
  const b = await received();
  const rate1 = ((b.bytes - a.bytes) * 1000) / (b.at - a.at);
  t.ok(Math.abs(rate1 / RULE_RATE - 1) <= 0.1, `over ${((b.at - a.at) / 1000).toFixed(1)} s the process server sent ${(rate1 / MiB).toFixed(3)} MiB/s; the cap is ${RULE_RATE / MiB} MiB/s (10% allowed)`);

  // Window 2: 10 s at the default rate, from 2 s after the rule ended.
  await sleep(ruleEnd.getTime() + 2_000 - Date.now());
  const c = await received();
  const after = await throttleStatus();
  t.equal(after.rateBytesPerSec, DEFAULT_RATE, 'after the rule ends the PS reports the default rate');
  t.equal(after.activeRule, null, 'and no rule');
  await sleep(c.at + 10_000 - Date.now());
  const d = await received();
  const rate2 = ((d.bytes - c.bytes) * 1000) / (d.at - c.at);
  t.ok(Math.abs(rate2 / DEFAULT_RATE - 1) <= 0.1, `then ${(rate2 / MiB).toFixed(3)} MiB/s over ${((d.at - c.at) / 1000).toFixed(1)} s; the default is ${DEFAULT_RATE / MiB} MiB/s (10% allowed)`);
  const ps = await lab.status('ps');
  const cached = (ps?.volumes as { storedBytesIn: number }[])[0]!.storedBytesIn;
  t.ok(cached - d.bytes > MiB, `the pipe was still full at the end: ${((cached - d.bytes) / MiB).toFixed(0)} MiB cached and not yet sent`);

  const drained = Date.now();
  await lab.waitConverged(drained, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');
  t.ok(Number((await throttleStatus()).bytesPassed) >= DATA_MIB * MiB, 'bytesPassed counts every stored byte forwarded');
});
