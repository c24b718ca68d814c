// The pipeline end to end with real daemons as child processes on loopback, real TLS, real files.
import path from 'node:path';
import t, { type Test } from 'tap';
import { Lab, type DaemonName } from '../../lab/lab.js';
import { Rng } from '../seed.js';
import { largestSum, makeImage, received, scratchDir, sha256, sleep, startWriter } from './helpers.js';

const SIZE_MIB = 96;
const DATA_MIB = 40;
const MAX_DIFF = 4 << 20;
const WINDOW = 4;

async function lab(t: Test, name: string): Promise<{ lab: Lab; source: string; replica: string }> {
  const dir = await scratchDir(t, name);
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE_MIB, DATA_MIB);
  const l = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300, maxDiffBytes: MAX_DIFF, window: WINDOW }, ps: { window: WINDOW } });
  t.teardown(() => l.stopAll());
  return { lab: l, source, replica };
}

t.test('a volume written during replication converges to a byte-identical replica', async (t) => {
  const { lab: l, source, replica } = await lab(t, 'converge');
  l.start('mt');
  l.start('ps');
  l.start('agent');
  const writer = startWriter(source, SIZE_MIB << 20);
  await sleep(6000);
  const written = await writer.stop();
  const stoppedAt = Date.now();
  await l.waitConverged(stoppedAt, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');
  const { distinct, resent, resends } = await received(l);
  t.ok(written > 1 << 20, `the writer changed ${written} bytes while replicating`);
  t.ok(distinct >= DATA_MIB << 20, `the master target logged every data block arriving (${distinct} bytes)`);
  t.equal(resends, 0, 'nothing was sent twice when nothing failed');
  t.equal(resent, 0);
  t.ok(distinct <= (DATA_MIB << 20) + written + MAX_DIFF, `bytes replicated (${distinct}) stay within data + writes`);
});

for (const victim of ['agent', 'ps', 'mt'] as DaemonName[]) {
  t.test(`SIGKILL of the ${victim} at random moments: the replica converges, without a full re-copy`, async (t) => {
    const rng = new Rng(`kill-${victim}`);
    const { lab: l, source, replica } = await lab(t, `kill-${victim}`);
    l.start('mt');
    l.start('ps');
    l.start('agent');
    const writer = startWriter(source, SIZE_MIB << 20, 40);
    const rounds = 3;
    for (let i = 0; i < rounds; i++) {
      await sleep(rng.int(500, 2500));
      await l.kill(victim);
      await sleep(rng.int(0, 800));
      l.start(victim);
    }
    await sleep(1500);
    const written = await writer.stop();
    const stoppedAt = Date.now();
    await l.waitConverged(stoppedAt, 180_000);
    t.equal(await sha256(replica), await sha256(source), 'replica equals source');
    const { distinct, resent, resends, sizes } = await received(l);
    // Every data block differs from the empty replica, so all of it arrives at least once.
    t.ok(distinct >= DATA_MIB << 20, `the master target logged every data block arriving (${distinct} bytes)`);
    // An agent killed between journaling and recording its baseline sends that differential's blocks again.
    const slack = victim === 'agent' ? rounds * MAX_DIFF : 0;
    t.ok(distinct <= (DATA_MIB << 20) + written + slack + MAX_DIFF, `distinct bytes applied (${distinct}) show no full re-copy (data ${DATA_MIB} MiB + written ${written})`);
    // Re-sent to the master target: a killed agent's unacknowledged differentials are already durable at the
    // process server, which forwards nothing twice; a killed process server re-forwards, and a killed master
    // target is re-sent, only what the master target had not acknowledged: one window per kill at most.
    const inFlight = victim === 'agent' ? 0 : rounds * WINDOW;
    t.ok(resends <= inFlight, `${resends} differentials arrived twice, at most ${inFlight} (a window per kill)`);
    t.ok(resent <= largestSum(sizes, inFlight), `bytes re-sent (${resent}) at most the ${inFlight} largest differentials (${largestSum(sizes, inFlight)})`);
  });
}
