// Failover commands without root: a drain needs a capture that makes points and leaves the volume
// protected when it cannot take one; usage and missing-retention errors are clear. The full round trip
// (planned failover, reverse, failback; unplanned failover) is test/privileged/failover.test.ts (XFS reflink).
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, scratchDir, sha256 } from './helpers.js';
import { Rng } from '../seed.js';

const rng = new Rng('failover');

const run = promisify(execFile);

t.test('capture "none": no final point, the volume stays protected; failover errors say why', async (t) => {
  const dir = await scratchDir(t, 'failover');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 16, 4);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 60_000);
  const cli = (args: string[]) => run(process.execPath, [TIDEMARK_BIN, ...args], { cwd: dir }).then(
    (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
  );

  const drained = await cli(['drain', 'vol1', '--config', lab.configs.agent]);
  t.equal(drained.code, 1, 'drain fails');
  t.match(drained.err, /TM_ERR_CAPTURE: vol1 has capture "none"/, 'because capture "none" never makes a recovery point');
  const planned = await cli(['failover', 'vol1', '--config', lab.configs.mt, '--out', path.join(dir, 'x.img'), '--planned']);
  t.equal(planned.code, 64, 'a planned failover without --agent-config is a usage error');
  t.match(planned.err, /--agent-config/);
  const unplanned = await cli(['failover', 'vol1', '--config', lab.configs.mt, '--out', path.join(dir, 'x.img')]);
  t.match(unplanned.err, /TM_ERR_POINT_NOT_FOUND: .*no retention configured/, 'an unplanned failover needs retention on the master target');
  const resumed = await cli(['resume', 'vol1', '--config', lab.configs.agent]);
  t.match(resumed.out, 'was not drained', 'resume of a protected volume changes nothing');

  // Still protected: a write reaches the replica.
  const fh = await fsp.open(source, 'r+');
  await fh.write(rng.bytes(8192), 0, 8192, 1 << 20);
  await fh.close();
  await lab.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(replica), await sha256(source), 'the volume is still replicated');
  t.equal(((await lab.status('agent'))?.volumes as Array<{ drained: unknown }>)[0]!.drained, null, 'and not drained');
});
