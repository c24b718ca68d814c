// An agent whose own certificate has expired is refused by the process server with a TLS alert it may
// only see as "connection closed": it must say its certificate expired (status and `tidemark status`),
// and a new certificate put in place is picked up without a restart.
import { execFile } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { issue } from '../../common/pki.js';
import { makeImage, scratchDir, sha256, waitFor } from './helpers.js';

t.test('an expired agent certificate is named as the cause, and a new one heals', async (t) => {
  const dir = await scratchDir(t, 'expired-cert');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 8, 4);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  // Valid for two seconds from now: expired by the time the test looks.
  await issue(path.join(dir, 'pki'), 'agent', 'agent-1', { days: 2 / 86_400 });
  await new Promise((r) => setTimeout(r, 2500));
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  let lastError = '';
  await waitFor(async () => {
    lastError = String(((await lab.status('agent'))?.uploader as { lastError?: string } | undefined)?.lastError ?? '');
    return /expired/.test(lastError);
  }, 60_000, 'the agent names its expired certificate');
  t.match(lastError, /TM_ERR_PKI: .*this agent's certificate \(agent-1\) expired at .*issue a new one/, `the cause: ${lastError}`);
  const st = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, 'status', '--config', lab.configs.agent, '--json'], { cwd: dir }, (err, out) => resolve({ code: err ? Number(err.code) : 0, out }));
  });
  t.equal(st.code, 3, 'status: not ok');
  const problems = (JSON.parse(st.out) as { volumes: Array<{ problems: Array<{ state: string; cause: string }> }> }).volumes[0]!.problems;
  t.match(problems.find((p) => p.state === 'DISCONNECTED')?.cause, /certificate \(agent-1\) expired/, 'tidemark status shows why it is disconnected');

  // A new certificate in place: reloaded, the agent connects and replicates.
  await issue(path.join(dir, 'pki'), 'agent', 'agent-1');
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals the source after the new certificate');
});
