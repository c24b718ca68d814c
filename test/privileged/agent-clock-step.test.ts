// The source's wall clock stepped back (an NTP step, a VM resumed from a snapshot) while the agent runs:
// replication goes on at its interval. The agent runs under libfaketime, as in the soak; a step back of
// 240 s used to hold every cycle for 240 s (cycles were timed by the wall clock; soak seed 217183275).
import path from 'node:path';
import t from 'tap';
import { faketimeLib, SourceClock } from '../../bench/soak/clock.js';
import { Lab } from '../../lab/lab.js';
import { makeImage, sha256, startWriter } from '../integration/helpers.js';
import { makeXfs, privileged, tempDir } from './require-root.js';
import { sleep } from './protected.js';

/** Seconds the source clock is stepped back: within the certificates' 5-minute backdating. */
const STEP_S = 240;
/** Far below the step: a stalled agent cannot converge within it, a running one does in seconds. */
const CONVERGE_MS = 90_000;

t.test(`a source clock stepped back ${STEP_S} s does not stall replication`, async (t) => {
  if (!privileged(t, ['mkfs.xfs'])) return;
  if (!faketimeLib()) {
    if (process.env.TIDEMARK_REQUIRE_PRIVILEGED === '1') t.fail('needs libfaketime (Debian package faketime)');
    else t.plan(0, 'needs libfaketime (Debian package faketime)');
    return;
  }
  const xfs = makeXfs(t).mnt;
  const source = path.join(xfs, 'source.img');
  const replica = path.join(xfs, 'replica.img');
  await makeImage(source, 16, 4);
  const dir = tempDir(t);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink' } }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  const clock = new SourceClock(path.join(dir, 'agent-clock'));
  await clock.step(STEP_S);
  lab.start('mt');
  lab.start('ps');
  lab.start('agent', await clock.env());

  let writer = startWriter(source, 16 << 20, 50);
  await sleep(1500).finally(() => writer.stop());
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(replica), await sha256(source), `replica equals source with the source clock +${STEP_S} s`);

  await clock.step(0);
  // libfaketime re-reads the offset every second: let the step reach the agent before writing.
  await sleep(3000);
  writer = startWriter(source, 16 << 20, 50);
  await sleep(1500).finally(() => writer.stop());
  // Polled on the images, not lab.waitConverged: its "a cycle after the writes" compares the agent's
  // lastCycleAt (its own wall clock, still +STEP_S for a stalled agent) with ours, and would pass at once.
  const deadline = Date.now() + CONVERGE_MS;
  let same = false;
  while (!(same = (await sha256(replica)) === (await sha256(source))) && Date.now() < deadline) await sleep(500);
  t.ok(same, `replica equals source within ${CONVERGE_MS / 1000} s of the writes after the clock went back ${STEP_S} s`);
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(await sha256(replica), await sha256(source), 'and still equal once the chain has converged');
});
