// Peers that must be refused are refused with a clear error code, and nothing they send is written.
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { initCa, issue } from '../../common/pki.js';
import { makeImage, scratchDir, until } from './helpers.js';

async function hrlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { recursive: true }).catch(() => [] as string[])) if (String(e).endsWith('.hrl')) out.push(String(e));
  return out;
}


t.test('an agent with a certificate from another CA, or sending a volume not assigned to it, is refused', async (t) => {
  const dir = await scratchDir(t, 'refuse');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 16, 8);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }] });
  t.teardown(() => lab.stopAll());
  const agentCfg = JSON.parse(await fsp.readFile(lab.configs.agent, 'utf8')) as Record<string, unknown>;

  // An impostor: same name, a certificate (and CA) of its own that the process server does not trust.
  await initCa(path.join(dir, 'other-pki'));
  await issue(path.join(dir, 'other-pki'), 'agent', 'agent-1');
  await fsp.writeFile(path.join(dir, 'impostor.json'), JSON.stringify({ ...agentCfg, stateDir: 'impostor-state', tls: { ca: 'other-pki/ca.crt', cert: 'other-pki/agent-1.crt', key: 'other-pki/agent-1.key' } }));
  // A real agent of this deployment, sending a volume assigned to agent-1, and one nobody has.
  await issue(path.join(dir, 'pki'), 'agent', 'agent-2');
  await fsp.writeFile(path.join(dir, 'agent2.json'), JSON.stringify({ ...agentCfg, name: 'agent-2', stateDir: 'agent2-state', tls: { ca: 'pki/ca.crt', cert: 'pki/agent-2.crt', key: 'pki/agent-2.key' }, volumes: [{ id: 'vol1', path: source }, { id: 'vol-1', path: source }] }));

  lab.start('mt');
  lab.start('ps');
  const impostor = lab.spawn(['agent', '--config', 'impostor.json'], 'impostor');
  const agent2 = lab.spawn(['agent', '--config', 'agent2.json'], 'agent2');
  t.teardown(() => { impostor.kill('SIGKILL'); agent2.kill('SIGKILL'); });

  const psSays = async (code: string, msg: string): Promise<boolean> => (await lab.logLines('ps')).some((l) => l.code === code && l.msg === msg);
  t.ok(await until(() => psSays('TM_ERR_PEER_REFUSED', 'peer refused'), 15_000), 'process server refused the certificate from another CA (TM_ERR_PEER_REFUSED)');
  t.ok(await until(() => psSays('TM_ERR_VOLUME_NOT_ASSIGNED', 'volume refused'), 15_000), 'process server refused agent-2 sending vol1 (TM_ERR_VOLUME_NOT_ASSIGNED)');
  t.ok(await until(async () => (await lab.logLines('ps')).some((l) => l.msg === 'volume refused' && l.volume === 'vol-1'), 15_000), 'process server refused vol-1');
  const unknown = (await lab.logLines('ps')).find((l) => l.msg === 'volume refused' && l.volume === 'vol-1');
  t.match(String(unknown?.detail), /not configured.*did you mean "vol1"/, 'the operator\'s log names the nearest configured volume');
  t.ok(await until(async () => {
    const told = (await lab.logLines('agent2')).filter((l) => l.code === 'TM_ERR_VOLUME_NOT_ASSIGNED');
    return told.some((l) => l.volume === 'vol1') && told.some((l) => l.volume === 'vol-1');
  }, 15_000), 'agent-2 was told, for both volumes, that they are not served to it (TM_ERR_VOLUME_NOT_ASSIGNED)');
  // The peer learns nothing about the configuration: not which volumes exist, nor who owns one.
  for (const l of (await lab.logLines('agent2')).filter((x) => x.code === 'TM_ERR_VOLUME_NOT_ASSIGNED')) {
    t.match(String(l.err), /is not served to "agent-2"/);
    t.notMatch(String(l.err), l.volume === 'vol-1' ? /vol1|agent-1|did you mean/ : /agent-1|did you mean/, `refusal of ${String(l.volume)} names no other volume or owner`);
  }

  // Every refusal above was seen; only now is "nothing cached" a statement about refused data.
  t.same(await hrlFiles(lab.stateDirs.ps), [], 'nothing was cached at the process server');
  t.notOk(existsSync(replica), 'no replica was created');
});

t.test('an unknown configuration key is an error naming the nearest valid key', async (t) => {
  const dir = await scratchDir(t, 'badcfg');
  const cfg = { name: 'a', stateDir: 's', tls: { ca: 'x', cert: 'y', key: 'z' }, cycleIntervalMS: 1000, volumes: [{ id: 'v', path: '/dev/null', trackr: 'scan' }] };
  await fsp.writeFile(path.join(dir, 'bad.json'), JSON.stringify(cfg));
  const run = promisify(execFile);
  const err = await run(process.execPath, [TIDEMARK_BIN, 'agent', '--config', path.join(dir, 'bad.json')]).then(() => null, (e: { code: number; stderr: string }) => e);
  t.ok(err, 'the agent refused to start');
  t.not(err?.code, 0, 'with a non-zero exit code');
  t.match(err?.stderr ?? '', /TM_ERR_CONFIG_UNKNOWN_KEY/, 'the error has its code');
  t.match(err?.stderr ?? '', /cycleIntervalMS.*did you mean "cycleIntervalMs"/, 'and names the key and the nearest valid one');
  t.notOk(existsSync(path.join(dir, 's')), 'and created no state');
});
