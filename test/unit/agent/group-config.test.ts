// Consistency groups in the agent's config: which volumes may form one, and a clear error for each mistake.
import t from 'tap';
import { validateConfig } from '../../../common/config.js';
import { agentConfigSchema } from '../../../agent/config.js';
import { formatGroupTag, parseGroupTag } from '../../../proto/group-tag.js';
import { caught } from '../caught.js';

const tls = { ca: 'ca.crt', cert: 'node.crt', key: 'node.key' };
const reflink = (id: string, mnt: string, extra: Record<string, unknown> = {}) => ({ id, path: `/dev/${id}`, tracker: 'blocktrace', capture: 'reflink', freeze: { mountpoint: mnt }, ...extra });
const frozen = (id: string, mnt: string, freeze: Record<string, unknown> = {}) => ({ id, path: `/dev/${id}`, capture: 'freeze', freeze: { mountpoint: mnt, ...freeze } });
const agent = (volumes: unknown[], groups: unknown) => ({ name: 'agent-1', stateDir: '/var/lib/tidemark', tls, processServer: { name: 'ps-1' }, volumes, groups });
const check = (volumes: unknown[], groups: unknown) => caught(() => validateConfig(agentConfigSchema, agent(volumes, groups), 'agent.json'));

t.test('valid groups', async (t) => {
  const c = validateConfig(agentConfigSchema, agent([reflink('data', '/srv/data'), reflink('log', '/srv/log'), { id: 'other', path: '/dev/sdz' }], [{ name: 'db', volumes: ['data', 'log'] }]));
  t.strictSame(c.groups, [{ name: 'db', volumes: ['data', 'log'] }]);
  const f = validateConfig(agentConfigSchema, agent([frozen('a', '/a', { pre: 'checkpoint' }), frozen('b', '/b')], [{ name: 'app', volumes: ['a', 'b'] }]));
  t.equal(f.groups[0]?.volumes.length, 2, 'capture "freeze" members, with scripts');
  t.strictSame(validateConfig(agentConfigSchema, { name: 'agent-1', stateDir: '/s', tls, processServer: { name: 'ps-1' }, volumes: [{ id: 'v', path: '/dev/v' }] }).groups, [], 'groups default to none');
});

t.test('a member that is not a volume gets a did-you-mean', async (t) => {
  const e = check([reflink('data', '/srv/data'), reflink('log', '/srv/log')], [{ name: 'db', volumes: ['data', 'logg'] }]);
  t.equal(e?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(e?.message, /agent\.json: groups\[0\]\.volumes\[1\]: volume "logg" is not among this agent's volumes; did you mean "log"\?/);
  t.equal(e?.context?.key, 'groups.0.volumes.1');
});

t.test('a volume in two groups, or twice in one', async (t) => {
  const vols = [reflink('a', '/a'), reflink('b', '/b'), reflink('c', '/c')];
  const two = check(vols, [{ name: 'g1', volumes: ['a', 'b'] }, { name: 'g2', volumes: ['c', 'a'] }]);
  t.equal(two?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(two?.message, /groups\[1\]\.volumes\[1\]: volume "a" is already in group "g1"; a volume can be in one group only/);
  const twice = check(vols, [{ name: 'g1', volumes: ['a', 'b', 'a'] }]);
  t.match(twice?.message, /volume "a" is listed twice/);
  const names = check(vols, [{ name: 'g', volumes: ['a', 'b'] }, { name: 'g', volumes: ['c', 'c'] }]);
  t.match(names?.message, /groups\[1\]\.name: there is already a group named "g"/);
});

t.test('members that cannot be cut at one instant are refused, saying why', async (t) => {
  const none = check([reflink('a', '/a'), { id: 'b', path: '/dev/b', capture: 'none' }], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.equal(none?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(none?.message, /groups\[0\]\.volumes\[1\]: volume "b" has capture "none" and no freeze\.mountpoint: a group member needs capture "freeze", or "reflink" with freeze\.mountpoint, because a cut at one instant/);
  const bare = check([reflink('a', '/a'), { id: 'b', path: '/dev/b', capture: 'reflink' }], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(bare?.message, /volume "b" has capture "reflink" and no freeze\.mountpoint/, 'reflink without a filesystem to freeze');
  const noneWithFreeze = check([reflink('a', '/a'), { id: 'b', path: '/dev/b', capture: 'none', freeze: { mountpoint: '/b' } }], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(noneWithFreeze?.message, /volume "b" has capture "none": a group member needs/, 'capture none, even with a freeze section');
  const script = check([reflink('a', '/a'), { id: 'b', path: '/dev/b', capture: 'script', script: { pre: 'x' }, freeze: { mountpoint: '/b' } }], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(script?.message, /volume "b" has capture "script": a group member needs/, 'any other capture too');
  const mixed = check([reflink('a', '/a'), frozen('b', '/b')], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(mixed?.message, /groups\[0\]\.volumes: group "g" mixes capture "reflink" and "freeze"; a group point has one class/);
  const scripts = check([reflink('a', '/a', { freeze: { mountpoint: '/a', pre: 'x' } }), reflink('b', '/b')], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(scripts?.message, /volume "a": freeze\.pre and freeze\.post run only with capture "freeze"/);
  const sameFs = check([reflink('a', '/srv'), reflink('b', '/srv')], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(sameFs?.message, /volumes "a" and "b" have the same freeze\.mountpoint \/srv/);
});

t.test('group shape: name, size, keys', async (t) => {
  const vols = [reflink('a', '/a'), reflink('b', '/b')];
  t.match(check(vols, [{ name: 'g', volumes: ['a'] }])?.message, /groups\[0\]\.volumes: a group needs at least two volumes/);
  t.match(check(vols, [{ name: 'd:b', volumes: ['a', 'b'] }])?.message, /groups\[0\]\.name: a group name is 1-40/);
  t.match(check(vols, [{ name: 'x'.repeat(41), volumes: ['a', 'b'] }])?.message, /groups\[0\]\.name/);
  const key = check(vols, [{ name: 'g', volume: ['a', 'b'] }]);
  t.equal(key?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(key?.message, /unknown key "groups\.0\.volume".*did you mean "volumes"\?/);
  const top = check(vols, undefined);
  t.equal(top, undefined, 'no groups key: fine');
  const typo = caught(() => validateConfig(agentConfigSchema, { name: 'agent-1', stateDir: '/s', tls, volumes: vols, group: [] }));
  t.match(typo?.message, /did you mean "groups"\?/);
});

t.test('group tags fit the journal\'s tag rules and read back', async (t) => {
  const longest = formatGroupTag({ group: 'x'.repeat(40), atMs: 9_999_999_999_999, members: 999 });
  t.ok(longest.length <= 64 && /^[\w.:@+-]{1,64}$/.test(longest), `${longest.length} characters, a valid tag`);
  t.strictSame(parseGroupTag('cg:db:1732300000123:2'), { group: 'db', atMs: 1732300000123, members: 2 });
  t.equal(parseGroupTag('app'), null);
  t.equal(parseGroupTag('cg:db:17:0'), null, 'no group of zero');
  t.equal(parseGroupTag('cg:d:b:1:2'), null);
});

t.test('data mode: groups of capture "freeze" members all in data mode; capture "script" alone', async (t) => {
  const data = (id: string, mnt: string, capture = 'freeze') => ({ ...frozen(id, mnt), tracker: 'data', capture });
  const ok = validateConfig(agentConfigSchema, agent([data('a', '/a'), data('b', '/b')], [{ name: 'db', volumes: ['a', 'b'] }]));
  t.equal(ok.groups[0]?.volumes.length, 2, 'two data-mode members with capture "freeze": a group');
  const mixed = check([data('a', '/a'), frozen('b', '/b')], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.equal(mixed?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(mixed?.message, /group "g" mixes tracker "data" with other trackers/);
  const none = check([data('a', '/a'), data('b', '/b', 'none')], [{ name: 'g', volumes: ['a', 'b'] }]);
  t.match(none?.message, /volume "b" uses tracker "data" with capture "none": a data-mode group member needs capture "freeze"/);
  const script = validateConfig(agentConfigSchema, agent([{ id: 's', path: '/dev/s', tracker: 'data', capture: 'script', script: { pre: 'quiesce', tag: 'app' } }], []));
  t.equal(script.volumes[0]?.capture, 'script', 'tracker "data" with capture "script"');
  const reflinkData = check([{ id: 'r', path: '/dev/r', tracker: 'data', capture: 'reflink' }], []);
  t.match(reflinkData?.message, /tracker "data" makes every differential a crash-consistent point by itself; it takes capture "none", or "freeze" or "script"/);
});
