// Daemon configuration: defaults come from common/defaults.ts, and every mistake is named precisely.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validateConfig } from '../../../common/config.js';
import { DEFAULTS } from '../../../common/defaults.js';
import { agentConfigSchema } from '../../../agent/config.js';
import { loadPsConfig, psConfigSchema } from '../../../process-server/config.js';
import { mtConfigSchema } from '../../../master-target/config.js';
import { caught } from '../caught.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const tls = { ca: 'ca.crt', cert: 'node.crt', key: 'node.key' };
const agentMin = { name: 'agent-1', stateDir: '/var/lib/tidemark', tls, processServer: { name: 'ps-1' }, volumes: [{ id: 'vol-1', path: '/dev/sdb' }] };
const psMin = {
  name: 'ps-1', cacheDir: '/var/cache/tidemark', tls,
  masterTargets: [{ name: 'mt-1', port: 7420 }],
  volumes: [{ id: 'vol-1', agent: 'agent-1', masterTarget: 'mt-1' }],
};
const mtMin = { name: 'mt-1', stateDir: '/var/lib/tidemark', tls, volumes: [{ id: 'vol-1', replica: '/srv/vol-1.img', processServers: ['ps-1'] }] };


t.test('a minimal agent config gets the defaults', async (t) => {
  const c = validateConfig(agentConfigSchema, agentMin);
  t.strictSame(c.processServer, { name: 'ps-1', host: '127.0.0.1', port: DEFAULTS.ports.processServer });
  t.equal(c.statusPort, 0);
  t.equal(c.blockSize, DEFAULTS.agent.blockSize);
  t.equal(c.cycleIntervalMs, DEFAULTS.agent.cycleIntervalMs);
  t.equal(c.maxDiffBytes, DEFAULTS.agent.maxDiffBytes);
  t.equal(c.journalQuotaBytes, DEFAULTS.agent.journalQuotaBytes);
  t.equal(c.window, DEFAULTS.transfer.window);
  t.strictSame(c.volumes, [{ id: 'vol-1', path: '/dev/sdb', tracker: DEFAULTS.agent.tracker, capture: DEFAULTS.agent.capture }]);
});

t.test('a minimal process-server config gets the defaults', async (t) => {
  const c = validateConfig(psConfigSchema, psMin);
  t.strictSame(c.listen, { host: '127.0.0.1', port: DEFAULTS.ports.processServer });
  t.equal(c.compression, DEFAULTS.processServer.compression);
  t.equal(c.window, DEFAULTS.transfer.window);
  t.equal(c.statusPort, 0);
  t.strictSame(c.masterTargets, [{ name: 'mt-1', host: '127.0.0.1', port: 7420 }]);
});

t.test('a minimal master-target config gets the defaults', async (t) => {
  const c = validateConfig(mtConfigSchema, mtMin);
  t.strictSame(c.listen, { host: '127.0.0.1', port: DEFAULTS.ports.masterTarget });
  t.equal(c.statusPort, 0);
  t.strictSame(c.volumes, mtMin.volumes);
  t.strictSame(c.connections, { handshakeTimeoutMs: DEFAULTS.listener.handshakeTimeoutMs, max: DEFAULTS.listener.maxConnections, perAddress: DEFAULTS.listener.maxPerAddress });
});

t.test('peer names are required: who may send each volume, and which process server an agent expects', async (t) => {
  const mt = caught(() => validateConfig(mtConfigSchema, { ...mtMin, volumes: [{ id: 'vol-1', replica: '/srv/vol-1.img' }] }));
  t.match(mt, { code: 'TM_ERR_CONFIG_INVALID', message: /volumes\[0\]\.processServers/ });
  const none = caught(() => validateConfig(mtConfigSchema, { ...mtMin, volumes: [{ id: 'vol-1', replica: '/srv/vol-1.img', processServers: [] }] }));
  t.match(none, { code: 'TM_ERR_CONFIG_INVALID', message: /at least one process server/ });
  const agent = caught(() => validateConfig(agentConfigSchema, { ...agentMin, processServer: { host: 'ps.example', port: 9000 } }));
  t.match(agent, { code: 'TM_ERR_CONFIG_INVALID', message: /processServer\.name/ });
});

t.test('explicit values win over defaults', async (t) => {
  const c = validateConfig(agentConfigSchema, { ...agentMin, cycleIntervalMs: 500, blockSize: 65536, processServer: { name: 'ps-1', host: 'ps.example', port: 9000 } });
  t.equal(c.cycleIntervalMs, 500);
  t.equal(c.blockSize, 65536);
  t.strictSame(c.processServer, { name: 'ps-1', host: 'ps.example', port: 9000 });
});

t.test('an unknown top-level key is named with the key it probably meant', async (t) => {
  const e = caught(() => validateConfig(agentConfigSchema, { ...agentMin, cycleIntervalMS: 1000 }, 'agent.json'));
  t.equal(e?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(e?.message, /agent\.json/, 'names the file');
  t.match(e?.message, /"cycleIntervalMS"/, 'names the key');
  t.match(e?.message, /did you mean "cycleIntervalMs"\?/, 'suggests the right key');
  t.equal(e?.context?.key, 'cycleIntervalMS');
});

t.test('an unknown key without a near miss lists the valid keys', async (t) => {
  const e = caught(() => validateConfig(mtConfigSchema, { ...mtMin, zzzzzzzzzzzz: 1 }));
  t.equal(e?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(e?.message, /valid: name, stateDir, tls, listen, statusPort, operatorListen, maxDiffBytes, recovery, space, volumes, connections/);
});

t.test('an unknown key inside volumes[0] suggests the nested key', async (t) => {
  const e = caught(() => validateConfig(agentConfigSchema, { ...agentMin, volumes: [{ id: 'vol-1', path: '/dev/sdb', trackr: 'scan' }] }));
  t.equal(e?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(e?.message, /"[^"]*trackr".*did you mean "tracker"\?/, 'names the key and suggests tracker');
  const ps = caught(() => validateConfig(psConfigSchema, { ...psMin, masterTargets: [{ name: 'mt-1', port: 7420, hots: 'x' }] }));
  t.match(ps?.message, /did you mean "host"\?/, 'masterTargets[0]: suggests host');
});

t.test('every unknown key is named at once', async (t) => {
  const e = caught(() => validateConfig(agentConfigSchema, { ...agentMin, windw: 4, volumes: [{ id: 'vol-1', path: '/dev/sdb', captur: 'none' }] }));
  t.equal(e?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY');
  t.match(e?.message, /did you mean "window"\?/);
  t.match(e?.message, /did you mean "capture"\?/);
});

t.test('a wrong type is TM_ERR_CONFIG_INVALID naming the path', async (t) => {
  const top = caught(() => validateConfig(agentConfigSchema, { ...agentMin, cycleIntervalMs: 'fast' }));
  t.equal(top?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(top?.message, /cycleIntervalMs:.*expected number/);
  const nested = caught(() => validateConfig(agentConfigSchema, { ...agentMin, volumes: [{ id: 'vol-1', path: 5 }] }));
  t.equal(nested?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(nested?.message, /volumes\[0\]\.path:.*expected string/);
  const range = caught(() => validateConfig(agentConfigSchema, { ...agentMin, blockSize: 3000 }));
  t.equal(range?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(range?.message, /blockSize.*power of two/);
  const missing = caught(() => validateConfig(psConfigSchema, { ...psMin, masterTargets: undefined }));
  t.equal(missing?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(missing?.message, /masterTargets/);
});

function writeJson(name: string, value: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(value));
  return file;
}

t.test('loadPsConfig', async (t) => {
  const ok = loadPsConfig(writeJson('ps-ok.json', psMin));
  t.equal(ok.configDir, dir, 'configDir is the folder of the file');
  t.equal(ok.volumes[0]?.masterTarget, 'mt-1');

  const file = writeJson('ps-typo.json', { ...psMin, volumes: [{ id: 'vol-1', agent: 'agent-1', masterTarget: 'mt-l' }] });
  const e = caught(() => loadPsConfig(file));
  t.equal(e?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(e?.message, /"mt-l"/, 'names the unconfigured target');
  t.match(e?.message, /did you mean "mt-1"\?/, 'suggests the configured one');

  const broken = caught(() => loadPsConfig(path.join(dir, 'missing.json')));
  t.equal(broken?.code, 'TM_ERR_CONFIG_INVALID', 'a missing file is a config error');
  fs.writeFileSync(path.join(dir, 'bad.json'), '{ "name": ');
  t.equal(caught(() => loadPsConfig(path.join(dir, 'bad.json')))?.code, 'TM_ERR_CONFIG_INVALID', 'malformed JSON is a config error');
});
