// The agent's cycle cadence (agent/cadence.ts): each volume or group is due at its own time, so a
// data-mode stream collected every data.collectIntervalMs is not held to cycleIntervalMs, and a unit with
// more than one differential's worth goes again at once.
import t from 'tap';
import { validateConfig } from '../../../common/config.js';
import { DEFAULTS } from '../../../common/defaults.js';
import { agentConfigSchema } from '../../../agent/config.js';
import { isDue, nextDue } from '../../../agent/cadence.js';
import { caught } from '../caught.js';

t.test('the next cycle comes when the earliest unit is due', async (t) => {
  const now = 1_000_000;
  t.equal(nextDue([{ nextAt: now + 2000, more: false }, { nextAt: now + 250, more: false }], now), 250, 'the data-mode stream, not the 2 s volume, sets the wake-up');
  t.equal(nextDue([{ nextAt: now - 5, more: false }, { nextAt: now + 2000, more: false }], now), 0, 'a unit overdue: at once');
  t.equal(nextDue([{ nextAt: now + 2000, more: true }, { nextAt: now + 900, more: false }], now), 0, 'a unit with more to send: at once');
  t.equal(nextDue([], now, 1500), 1500, 'no unit to run (all lingering): the idle interval');
});

t.test('only the busy unit goes again at once; the others keep their times', async (t) => {
  const now = 1_000_000;
  const busy = { nextAt: now + 250, more: true };
  const quiet = { nextAt: now + 1500, more: false };
  const due = (woken = false): boolean[] => [busy, quiet].map((u) => isDue(u, now, woken));
  t.same(due(), [true, false], 'the unit with more to send runs; the one not due waits for its time');
  t.same(due(true), [true, true], 'an operator wake runs every unit');
  t.same([{ nextAt: now, more: false }, { nextAt: now + 1, more: false }].map((u) => isDue(u, now, false)), [true, false], 'due exactly at its time, not a millisecond before');
});

t.test('data.collectIntervalMs: default, partial section, bounds', async (t) => {
  const tls = { ca: 'ca.crt', cert: 'node.crt', key: 'node.key' };
  const agent = (data?: Record<string, unknown>) => ({ name: 'agent-1', stateDir: '/var/lib/tidemark', tls, processServer: { name: 'ps-1' }, ...(data && { data }), volumes: [{ id: 'v', path: '/dev/sdb', tracker: 'data' }] });
  t.equal(validateConfig(agentConfigSchema, agent()).data.collectIntervalMs, DEFAULTS.agent.data.collectIntervalMs);
  t.ok(DEFAULTS.agent.data.collectIntervalMs < DEFAULTS.agent.cycleIntervalMs, 'a data-mode stream is collected more often than a cycle by default');
  t.equal(validateConfig(agentConfigSchema, agent({ ringMiB: 256 })).data.collectIntervalMs, DEFAULTS.agent.data.collectIntervalMs, 'a partial data section keeps the default');
  t.equal(validateConfig(agentConfigSchema, agent({ collectIntervalMs: 1000 })).data.collectIntervalMs, 1000);
  const low = caught(() => validateConfig(agentConfigSchema, agent({ collectIntervalMs: 10 }), 'agent.json'));
  t.equal(low?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(low?.message, /collectIntervalMs/);
});
