// Passwords hash with scrypt and verify only themselves; the config is closed and checked across fields;
// pages escape what they show.
import t from 'tap';
import { codeOf } from '../../../common/errors.js';
import { validateConfig } from '../../../common/config.js';
import { hashPassword, verifyPassword, DUMMY_HASH } from '../../../config-server/auth.js';
import { checked, configServerSchema, type ConfigServerConfig } from '../../../config-server/config.js';
import { html } from '../../../config-server/html.js';

t.test('scrypt hashes', async (t) => {
  const h = await hashPassword('correct horse');
  t.match(h, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
  t.not(h, await hashPassword('correct horse'), 'salted');
  t.equal(await verifyPassword('correct horse', h), true);
  t.equal(await verifyPassword('correct horsf', h), false);
  t.equal(await verifyPassword('', DUMMY_HASH), false, 'the dummy hash matches nothing');
  t.equal(await verifyPassword('x', 'md5$abc'), false, 'a malformed hash matches nothing');
});

const base = { stateDir: 's', tls: { cert: 'c', key: 'k' }, listen: {} };
const load = (raw: unknown): ConfigServerConfig => checked({ ...validateConfig(configServerSchema, raw, 'cs.json'), configDir: '/' } as ConfigServerConfig, 'cs.json');

t.test('config', async (t) => {
  const c = load({ ...base, daemons: [{ name: 'mt-1', role: 'master-target', stateDir: '/x' }] });
  t.equal(c.intervalMs, 10_000, 'defaults');
  t.equal(c.listen.port, 7430);
  const e1 = (() => { try { load({ ...base, intervalMS: 5 }); } catch (e) { return e as Error; } return null; })();
  t.equal(codeOf(e1), 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(e1!.message, /did you mean "intervalMs"/);
  t.throws(() => load({ ...base, daemons: [{ name: 'a', role: 'agent' }] }), /needs remote \(its operatorListen\), statusUrl or stateDir/);
  // Status can be read over the remote operator port alone.
  const r = load({ ...base, tls: { cert: 'c', key: 'k', ca: 'ca' }, daemons: [{ name: 'a', role: 'agent', remote: { host: '10.0.0.5', port: 7440 } }] });
  t.equal(r.daemons[0]!.standby, false, 'not standby by default');
  t.throws(() => load({ ...base, daemons: [{ name: 'a', role: 'agent', stateDir: 'x' }, { name: 'a', role: 'agent', stateDir: 'y' }] }), /"a" is listed twice/);
  t.throws(() => load({ ...base, users: [{ name: 'u', role: 'admin', passwordHash: 'scrypt$1$1$1$a$b' }] }), /role/);
  t.throws(() => load({ ...base, users: [{ name: 'u', role: 'viewer', passwordHash: 'hunter2' }] }), /passwordHash/);
  t.throws(() => load({ ...base, plans: [{ name: 'p', groups: [{ name: 'g', volumes: [{ id: 'v', masterTarget: 'nope' }] }] }] }), /no master target "nope"/);
});

t.test('pages escape what they show', async (t) => {
  const id = '<script>alert(1)</script>';
  const out = html`<td>${id}</td>${[[html`<b>${'"&'}</b>`]]}`.text;
  t.equal(out, '<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><b>&quot;&amp;</b>');
});
