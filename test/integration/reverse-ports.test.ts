// `tidemark reverse` writes configs whose daemons must listen somewhere: a port already in use here, or
// one port for two of the reverse daemons' ports on one host (replication or remote operator ports), is
// refused before anything is written. Remote operator ports asked for (--agent-operator-port,
// --ps-operator-port, --mt-operator-port, --operator-clients) are written as each daemon's operatorListen.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { freePort, Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, scratchDir } from './helpers.js';

function tm(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile(process.execPath, [TIDEMARK_BIN, ...args], { cwd }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr })));
}

t.test('reverse refuses ports in use or shared, and writes nothing', async (t) => {
  const dir = await scratchDir(t, 'reverse-ports');
  const source = path.join(dir, 'source.img');
  const failedOver = path.join(dir, 'failed-over.img');
  await makeImage(source, 4, 1);
  await makeImage(failedOver, 4, 1);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img') }] });
  const held = net.createServer();
  await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => held.close(() => r())));
  const busy = (held.address() as net.AddressInfo).port;
  const rev = path.join(dir, 'reverse');
  const base = ['reverse', 'vol1', '--config', lab.configs.mt, '--agent-config', lab.configs.agent, '--dir', rev, '--source', failedOver];

  const inUse = await tm(dir, ...base, '--ps-port', String(busy), '--mt-port', '1');
  t.equal(inUse.code, 64, `a port in use: usage error (${inUse.stderr.trim()})`);
  t.match(inUse.stderr, new RegExp(`TM_ERR_USAGE: port ${busy} on 127\\.0\\.0\\.1 is in use .*give --ps-port <a free port>`));
  const mtBusy = await tm(dir, ...base, '--mt-port', String(busy));
  t.equal(mtBusy.code, 64, 'the master target\'s port in use too');
  t.match(mtBusy.stderr, /the reverse master target could not listen there; give --mt-port/);
  const same = await tm(dir, ...base, '--ps-port', '40999', '--mt-port', '40999');
  t.equal(same.code, 64, 'one port for both: usage error');
  t.match(same.stderr, /--ps-port and --mt-port are both 40999 on 127\.0\.0\.1/);
  const opBusy = await tm(dir, ...base, '--ps-port', '40997', '--mt-port', '40998', '--mt-operator-port', String(busy));
  t.equal(opBusy.code, 64, 'an operator port in use: usage error');
  t.match(opBusy.stderr, new RegExp(`port ${busy} on 127\\.0\\.0\\.1 is in use .*the reverse master target's operator port could not listen there; give --mt-operator-port <a free port>`));
  const opSame = await tm(dir, ...base, '--ps-port', '40997', '--mt-port', '40998', '--agent-operator-port', '40997');
  t.equal(opSame.code, 64, 'an operator port on the process server\'s port: usage error');
  t.match(opSame.stderr, /--ps-port and --agent-operator-port are both 40997 on 127\.0\.0\.1/);
  const clientsOnly = await tm(dir, ...base, '--ps-port', '40997', '--mt-port', '40998', '--operator-clients', 'cs-1');
  t.equal(clientsOnly.code, 64, '--operator-clients without an operator port: usage error');
  t.match(clientsOnly.stderr, /--operator-clients names who may use/);
  t.equal(await fsp.stat(rev).then(() => true, () => false), false, 'nothing was written');
});

t.test('reverse gives each reverse daemon the operator port asked for', async (t) => {
  const dir = await scratchDir(t, 'reverse-operator');
  const source = path.join(dir, 'source.img');
  const failedOver = path.join(dir, 'failed-over.img');
  await makeImage(source, 4, 1);
  await makeImage(failedOver, 4, 1);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img') }] });
  const [psPort, mtPort, agentOp, psOp, mtOp] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const rev = path.join(dir, 'reverse');
  const r = await tm(dir, 'reverse', 'vol1', '--config', lab.configs.mt, '--agent-config', lab.configs.agent, '--dir', rev, '--source', failedOver,
    '--pki', path.join(dir, 'pki'), '--ps-port', String(psPort), '--mt-port', String(mtPort),
    '--agent-operator-port', String(agentOp), '--ps-operator-port', String(psOp), '--mt-operator-port', String(mtOp), '--operator-clients', 'cs-1,ann');
  t.equal(r.code, 0, `reverse set up (${r.stderr.trim()})`);
  t.match(r.stdout, new RegExp(`remote operator ports: agent 127\\.0\\.0\\.1:${agentOp}, process server 127\\.0\\.0\\.1:${psOp}, master target 127\\.0\\.0\\.1:${mtOp} \\(operatorListen, clients cs-1, ann\\)`));
  const read = async (f: string): Promise<{ operatorListen?: unknown }> => JSON.parse(await fsp.readFile(path.join(rev, f), 'utf8')) as { operatorListen?: unknown };
  t.same((await read('agent.json')).operatorListen, { host: '127.0.0.1', port: agentOp, clients: ['cs-1', 'ann'] }, 'the reverse agent\'s operatorListen');
  t.same((await read('process-server.json')).operatorListen, { host: '127.0.0.1', port: psOp, clients: ['cs-1', 'ann'] }, 'the reverse process server\'s');
  t.same((await read('master-target.json')).operatorListen, { host: '127.0.0.1', port: mtOp, clients: ['cs-1', 'ann'] }, 'the reverse master target\'s');

  // Without the flags, no operatorListen (and only the one asked for when one is given).
  const rev2 = path.join(dir, 'reverse2');
  const r2 = await tm(dir, 'reverse', 'vol1', '--config', lab.configs.mt, '--agent-config', lab.configs.agent, '--dir', rev2, '--source', failedOver,
    '--pki', path.join(dir, 'pki'), '--ps-port', String(psPort), '--mt-port', String(mtPort), '--mt-operator-port', String(mtOp));
  t.equal(r2.code, 0, `reverse set up again elsewhere (${r2.stderr.trim()})`);
  const read2 = async (f: string): Promise<{ operatorListen?: unknown }> => JSON.parse(await fsp.readFile(path.join(rev2, f), 'utf8')) as { operatorListen?: unknown };
  t.equal((await read2('agent.json')).operatorListen, undefined, 'no operator port for the agent when not asked');
  t.equal((await read2('process-server.json')).operatorListen, undefined, 'nor for the process server');
  t.same((await read2('master-target.json')).operatorListen, { host: '127.0.0.1', port: mtOp }, 'the master target\'s, open to any operator or config-server certificate');
});
