// The agent's tracker and capture settings: defaults from common/defaults.ts, and a clear error for each
// mistake (the general config rules are in test/unit/common/config.test.ts).
import t from 'tap';
import { validateConfig } from '../../../common/config.js';
import { DEFAULTS } from '../../../common/defaults.js';
import { agentConfigSchema } from '../../../agent/config.js';
import { caught } from '../caught.js';

const tls = { ca: 'ca.crt', cert: 'node.crt', key: 'node.key' };
const vol = { id: 'vol-1', path: '/dev/sdb' };
const agent = (extra: Record<string, unknown> = {}, volume: Record<string, unknown> = {}) => ({
  name: 'agent-1', stateDir: '/var/lib/tidemark', tls, processServer: { name: 'ps-1' }, ...extra, volumes: [{ ...vol, ...volume }],
});


t.test('defaults for the new keys', async (t) => {
  const c = validateConfig(agentConfigSchema, agent());
  t.equal(c.bitmapAfterMs, DEFAULTS.agent.bitmapAfterMs);
  t.strictSame(c.blocktrace, { bufferKiB: DEFAULTS.agent.blocktrace.bufferKiB, drainIntervalMs: DEFAULTS.agent.blocktrace.drainIntervalMs });
  t.equal(c.volumes[0]?.tracker, 'scan');
  t.equal(c.volumes[0]?.capture, 'none');
  t.equal(c.volumes[0]?.reflink, undefined);
  t.equal(c.volumes[0]?.freeze, undefined);

  const partial = validateConfig(agentConfigSchema, agent({ blocktrace: { bufferKiB: 65536 } }));
  t.strictSame(partial.blocktrace, { bufferKiB: 65536, drainIntervalMs: DEFAULTS.agent.blocktrace.drainIntervalMs }, 'a partial blocktrace section keeps the other default');
});

t.test('blocktrace, reflink and freeze volumes', async (t) => {
  const c = validateConfig(agentConfigSchema, agent({}, { tracker: 'blocktrace', capture: 'reflink', reflink: {} }));
  t.equal(c.volumes[0]?.tracker, 'blocktrace');
  t.strictSame(c.volumes[0]?.reflink, { keep: DEFAULTS.agent.reflinkKeep }, 'reflink: keep defaults, dir stays unset');
  t.equal(validateConfig(agentConfigSchema, agent({}, { capture: 'reflink' })).volumes[0]?.reflink, undefined, 'reflink section optional');

  const f = validateConfig(agentConfigSchema, agent({}, { capture: 'freeze', freeze: { mountpoint: '/srv/db', pre: 'db-checkpoint' } }));
  t.strictSame(f.volumes[0]?.freeze, { mountpoint: '/srv/db', pre: 'db-checkpoint', timeoutMs: DEFAULTS.agent.freezeTimeoutMs, tag: DEFAULTS.agent.freezeTag });
});

t.test('capture "freeze" without freeze.mountpoint is a clear error', async (t) => {
  const none = caught(() => validateConfig(agentConfigSchema, agent({}, { capture: 'freeze' }), 'agent.json'));
  t.equal(none?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(none?.message, /agent\.json/, 'names the file');
  t.match(none?.message, /volumes\[0\]\.freeze: capture "freeze" needs freeze\.mountpoint/, 'names the volume, the key and what it needs');
  t.equal(none?.context?.key, 'volumes.0.freeze');

  const empty = caught(() => validateConfig(agentConfigSchema, agent({}, { capture: 'freeze', freeze: {} })));
  t.equal(empty?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(empty?.message, /volumes\[0\]\.freeze\.mountpoint/, 'an empty freeze section: mountpoint named');
});

t.test('an unknown key inside blocktrace gives a did-you-mean', async (t) => {
  const e = caught(() => validateConfig(agentConfigSchema, agent({ blocktrace: { bufferKib: 8192 } }), 'agent.json'));
  t.equal(e?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(e?.message, /unknown key "blocktrace\.bufferKib" at blocktrace; did you mean "bufferKiB"\?/);
  t.equal(e?.context?.key, 'blocktrace.bufferKib');
  t.equal(e?.context?.suggestion, 'bufferKiB');

  const drain = caught(() => validateConfig(agentConfigSchema, agent({ blocktrace: { drainIntervalMS: 100 } })));
  t.match(drain?.message, /did you mean "drainIntervalMs"\?/);

  const nested = caught(() => validateConfig(agentConfigSchema, agent({}, { capture: 'freeze', freeze: { mountpoint: '/srv', timeout: 5000 } })));
  t.equal(nested?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(nested?.message, /"volumes\.0\.freeze\.timeout".*did you mean "timeoutMs"\?/, 'inside a volume\'s freeze section too');
  const reflink = caught(() => validateConfig(agentConfigSchema, agent({}, { capture: 'reflink', reflink: { keeep: 2 } })));
  t.match(reflink?.message, /did you mean "keep"\?/, 'and its reflink section');
});

t.test('out-of-range values name the key', async (t) => {
  const cases: Array<[Record<string, unknown>, Record<string, unknown>, RegExp]> = [
    [{ blocktrace: { bufferKiB: 2 } }, {}, /blocktrace\.bufferKiB/],
    [{ blocktrace: { drainIntervalMs: 10 } }, {}, /blocktrace\.drainIntervalMs/],
    [{ bitmapAfterMs: 10 }, {}, /bitmapAfterMs/],
    [{}, { tracker: 'nbd' }, /volumes\[0\]\.tracker/],
    [{}, { capture: 'snapshot' }, /volumes\[0\]\.capture/],
    [{}, { capture: 'reflink', reflink: { keep: -1 } }, /volumes\[0\]\.reflink\.keep/],
    [{}, { capture: 'freeze', freeze: { mountpoint: '/srv', timeoutMs: 50 } }, /volumes\[0\]\.freeze\.timeoutMs/],
    [{}, { capture: 'freeze', freeze: { mountpoint: '/srv', tag: '' } }, /volumes\[0\]\.freeze\.tag/],
  ];
  for (const [top, volume, where] of cases) {
    const e = caught(() => validateConfig(agentConfigSchema, agent(top, volume)));
    t.equal(e?.code, 'TM_ERR_CONFIG_INVALID', JSON.stringify({ ...top, ...volume }));
    t.match(e?.message, where);
  }
});
