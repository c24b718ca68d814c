// Each volume is bound to the certificate names configured for it, clients pin the server they expect,
// and a revoked certificate is refused and disconnected: a valid certificate of the CA is not enough.
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { freePort, Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { issue } from '../../common/pki.js';
import { makeImage, scratchDir, sha256, waitFor } from './helpers.js';

const run = promisify(execFile);


const says = (l: Lab, log: string, pred: (line: Record<string, unknown>) => boolean): (() => Promise<boolean>) => async () => (await l.logLines(log)).some(pred);

t.test('a process server certificate of the same CA cannot open a volume it is not bound to', async (t) => {
  const dir = await scratchDir(t, 'rogue-ps');
  const source = path.join(dir, 'source.img');
  const rogueSource = path.join(dir, 'rogue.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 16, 8);
  await makeImage(rogueSource, 16, 16);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  // A rogue pipeline with certificates from the deployment's own CA: a process server "ps-rogue" that
  // forwards "vol1" to the real master target, fed by an agent of its own with different data.
  await issue(path.join(dir, 'pki'), 'process-server', 'ps-rogue');
  await issue(path.join(dir, 'pki'), 'agent', 'agent-rogue');
  const mtCfg = JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as { listen: { port: number } };
  const roguePort = await freePort();
  const tls = (n: string): Record<string, string> => ({ ca: 'pki/ca.crt', cert: `pki/${n}.crt`, key: `pki/${n}.key` });
  await fsp.writeFile(path.join(dir, 'rogue-ps.json'), JSON.stringify({
    name: 'ps-rogue', cacheDir: 'rogue-cache', tls: tls('ps-rogue'), listen: { host: '127.0.0.1', port: roguePort },
    masterTargets: [{ name: 'mt-1', host: '127.0.0.1', port: mtCfg.listen.port }], volumes: [{ id: 'vol1', agent: 'agent-rogue', masterTarget: 'mt-1' }],
  }));
  await fsp.writeFile(path.join(dir, 'rogue-agent.json'), JSON.stringify({
    name: 'agent-rogue', stateDir: 'rogue-agent-state', tls: tls('agent-rogue'), cycleIntervalMs: 300,
    processServer: { name: 'ps-rogue', host: '127.0.0.1', port: roguePort }, volumes: [{ id: 'vol1', path: rogueSource }],
  }));

  // The rogue goes first: a volume never replicated before must not be adopted by whoever sends it.
  lab.start('mt');
  const rps = lab.spawn(['process-server', '--config', 'rogue-ps.json'], 'rogue-ps');
  const ragent = lab.spawn(['agent', '--config', 'rogue-agent.json'], 'rogue-agent');
  t.teardown(() => { rps.kill('SIGKILL'); ragent.kill('SIGKILL'); });
  await waitFor(says(lab, 'mt', (l) => l.msg === 'volume refused' && l.code === 'TM_ERR_VOLUME_NOT_ASSIGNED' && l.peer === 'ps-rogue'), 30_000, 'master target refuses vol1 from ps-rogue');
  await waitFor(says(lab, 'rogue-ps', (l) => l.code === 'TM_ERR_VOLUME_NOT_ASSIGNED'), 15_000, 'ps-rogue is told why');
  const told = (await lab.logLines('rogue-ps')).find((l) => l.code === 'TM_ERR_VOLUME_NOT_ASSIGNED');
  t.match(String(told?.err), /not served to "ps-rogue"/, 'the rogue learns only that the volume is not served to it');
  t.notMatch(String(told?.err), /ps-1/, 'and not which process server it is bound to');
  t.notOk(existsSync(replica), 'no replica was created from the rogue\'s data');

  // The real pipeline then replicates its own bytes; the rogue keeps being refused meanwhile.
  lab.start('ps');
  const since = Date.now();
  lab.start('agent');
  await lab.waitConverged(since, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'the replica holds the real source, byte for byte');
  t.not(await sha256(replica), await sha256(rogueSource));
  const mtStatus = await lab.status('mt');
  t.equal((mtStatus?.volumes as Array<{ consistent: boolean }>)[0]?.consistent, true);
});

t.test('a process server refuses a master target presenting another name than the one configured', async (t) => {
  const dir = await scratchDir(t, 'pin-mt');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 8, 4);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  // Another master target of the same CA answers where mt-1 is expected.
  await issue(path.join(dir, 'pki'), 'master-target', 'mt-impostor');
  const mtCfg = JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as Record<string, unknown>;
  await fsp.writeFile(lab.configs.mt, JSON.stringify({ ...mtCfg, name: 'mt-impostor', tls: { ca: 'pki/ca.crt', cert: 'pki/mt-impostor.crt', key: 'pki/mt-impostor.key' } }));
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await waitFor(says(lab, 'ps', (l) => l.code === 'TM_ERR_PEER_REFUSED' && /'mt-impostor' \(master-target\), expected 'mt-1'/.test(String(l.err))), 30_000, 'process server refuses mt-impostor');
  // The agent is connected and the process server keeps trying (and refusing): it never forwards anything.
  await waitFor(async () => ((await lab.status('ps'))?.agents as string[] | undefined)?.includes('agent-1') ?? false, 30_000, 'the agent is connected to the process server');
  await waitFor(async () => (await lab.logLines('ps')).filter((l) => l.code === 'TM_ERR_PEER_REFUSED').length >= 3, 30_000, 'three refused attempts');
  const fwd = ((await lab.status('ps'))?.forwarders as Record<string, { connected: boolean; diffsSent: number }>)['mt-1'];
  t.equal(fwd?.connected, false, 'the forwarder never connected');
  t.equal(fwd?.diffsSent, 0, 'and sent nothing');
  t.notOk(existsSync(replica), 'nothing reached the impostor');
});

t.test('revoking a certificate drops its live connections and refuses it; a re-issued one resumes', async (t) => {
  const dir = await scratchDir(t, 'revoke');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 16, 8);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  let since = Date.now();
  lab.start('agent');
  await lab.waitConverged(since, 120_000);
  t.equal(await sha256(replica), await sha256(source));
  const before = await sha256(replica);

  // The process server's key leaked: revoke its certificate. Daemons read pki/crl.pem (beside ca.crt).
  const { stdout } = await run(process.execPath, [TIDEMARK_BIN, 'pki', 'revoke', 'ps-1', '--dir', path.join(dir, 'pki')]);
  t.match(stdout, /revoked ps-1/);
  const listed = await run(process.execPath, [TIDEMARK_BIN, 'pki', 'crl', '--dir', path.join(dir, 'pki')]);
  t.match(listed.stdout, /ps-1/, 'pki crl lists it');
  await waitFor(says(lab, 'mt', (l) => l.msg === 'peer certificate revoked; connection dropped' && l.peer === 'ps-1'), 15_000, 'master target drops the live connection from ps-1');
  await waitFor(says(lab, 'agent', (l) => l.msg === 'peer certificate revoked; connection dropped' && l.peer === 'ps-1'), 15_000, 'agent drops its connection to ps-1');
  // Reconnecting is refused at both ends.
  await waitFor(says(lab, 'mt', (l) => l.msg === 'peer refused' && /revoked certificate/.test(String(l.err))), 15_000, 'master target refuses ps-1 reconnecting');
  await waitFor(says(lab, 'agent', (l) => l.code === 'TM_ERR_PEER_REFUSED' && /revoked certificate/.test(String(l.err))), 15_000, 'agent refuses ps-1 as a server');
  // Data written meanwhile is held at the agent; the replica does not move.
  const fh = await fsp.open(source, 'r+');
  await fh.write(Buffer.alloc(65536, 0x5a), 0, 65536, 1 << 20);
  await fh.close();
  await waitFor(async () => Number(((await lab.status('agent'))?.volumes as Array<{ journalFiles: number }>)[0]?.journalFiles ?? 0) > 0, 15_000, 'the agent journals the new write');
  const mtSeen = (await lab.logLines('mt')).filter((l) => l.msg === 'peer refused').length;
  await waitFor(async () => (await lab.logLines('mt')).filter((l) => l.msg === 'peer refused').length > mtSeen, 15_000, 'another refused reconnect');
  t.equal(await sha256(replica), before, 'the replica did not change while the process server was revoked');

  // Rotation: a new certificate for the same name is picked up without a restart, and replication resumes.
  await issue(path.join(dir, 'pki'), 'process-server', 'ps-1');
  since = Date.now();
  await lab.waitConverged(since, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'converged again with the re-issued certificate');
});
