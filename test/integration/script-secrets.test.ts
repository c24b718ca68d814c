// A capture script's command line and output never reach /status or the log, which anyone on the host
// may read (issue 12 item 5): a failure names the script's program and exit status only.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { makeImage, scratchDir, sleep } from './helpers.js';

const SECRET = 'hunter2-db-password';

t.test('a failing script holding a password on its command line and in its stderr: neither is echoed', async (t) => {
  const dir = await scratchDir(t, 'secrets');
  const source = path.join(dir, 'source.img');
  await makeImage(source, 8, 2);
  // The password is on the command line, in an assignment, and in what the script prints as it fails.
  const pre = `DBPASS=${SECRET} sh -c 'echo "login refused for password=${SECRET}" >&2; exit 3' --password=${SECRET}`;
  const post = `echo "${SECRET}" >&2; exit 4`;
  const lab = await Lab.create({
    dir,
    volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img'), agent: { capture: 'script', script: { pre, post, tag: 'db', timeoutMs: 5000 } } }],
    agent: { cycleIntervalMs: 300 },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  let status: Record<string, unknown> | null = null;
  const deadline = Date.now() + 30_000;
  for (;;) {
    status = await lab.status('agent');
    const vols = (status?.volumes ?? []) as Array<{ captureStats?: { failures?: number } }>;
    if ((vols[0]?.captureStats?.failures ?? 0) >= 2) break;
    if (Date.now() > deadline) throw new Error('no capture failure reported in 30 s');
    await sleep(200);
  }
  const text = JSON.stringify(status);
  const vol = (status!.volumes as Array<{ captureStats: { lastError: string } }>)[0]!;
  t.match(vol.captureStats.lastError, /(pre script \(sh\) failed \(exit status 3\)|post script \(echo\) failed \(exit status 4\))$/, `status names the script and its exit status: ${vol.captureStats.lastError}`);
  t.notOk(text.includes(SECRET), 'the password is nowhere in /status');
  t.notOk(text.includes('DBPASS'), 'nor the command line');
  await lab.stopAll();
  const log = await fsp.readFile(path.join(dir, 'agent.log'), 'utf8');
  t.ok(log.includes('TM_ERR_CAPTURE'), 'the log reports the failures (TM_ERR_CAPTURE)');
  t.ok(log.includes('exit status 3'), 'with the exit status');
  t.notOk(log.includes(SECRET), 'the password is nowhere in the log file');
});
