// `tidemark reverse` writes configs whose daemons must listen somewhere: a port already in use here, or
// the same port for both reverse daemons on one host, is refused before anything is written.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
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
  t.equal(await fsp.stat(rev).then(() => true, () => false), false, 'nothing was written');
});
