// A dead master target fills the process server's cache: only its volumes are held back; the volume
// routed to the live master target keeps replicating; when the dead one returns, everything drains.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Fleet, PS, type FleetVolume } from '../../lab/fleet.js';
import { scratchDir, sha256, sleep } from './helpers.js';
import { Rng } from '../seed.js';

const rng = new Rng('backpressure-routing');

const SIZE = 32 << 20;

async function scribble(v: FleetVolume, bytes: number): Promise<void> {
  const fh = await fsp.open(v.source, 'r+');
  try {
    for (let done = 0; done < bytes; done += 65536) await fh.write(rng.bytes(65536), 0, 65536, rng.int(0, SIZE / 65536) * 65536);
  } finally {
    await fh.close();
  }
}

t.test('cache full because of a dead master target: only its volume is paused', async (t) => {
  const dir = await scratchDir(t, 'bp-routing');
  const volumes: FleetVolume[] = ['live', 'dead'].map((id, i) => ({ id, agent: 'agent-1', masterTarget: `mt-${i + 1}`, source: path.join(dir, `${id}.img`), replica: path.join(dir, `${id}.replica.img`) }));
  for (const v of volumes) await fsp.truncate(v.source, SIZE).catch(async () => { await fsp.writeFile(v.source, ''); await fsp.truncate(v.source, SIZE); });
  const fleet = await Fleet.create({
    dir, agents: ['agent-1'], masterTargets: ['mt-1', 'mt-2'], volumes,
    agent: { cycleIntervalMs: 500 },
    ps: { compression: 'none', cache: { quotaBytes: 8 << 20 } },
  });
  t.teardown(() => fleet.stopAll());
  fleet.startAll();
  await fleet.waitConverged(Date.now(), 90_000);
  const [live, dead] = volumes as [FleetVolume, FleetVolume];

  await fleet.stop('mt-2');
  await scribble(dead, 16 << 20); // twice the cache quota, for a master target that is gone
  let cache: Record<string, unknown> | undefined;
  for (let i = 0; i < 60; i++) {
    cache = (await fleet.status(PS))?.cache as Record<string, unknown> | undefined;
    if (cache?.backpressure === true) break;
    await sleep(500);
  }
  t.equal(cache?.backpressure, true, 'the cache filled with the dead master target\'s volume: backpressure');
  t.same(cache?.pausedVolumes, ['dead'], 'only that volume is held back');

  // The live volume goes on replicating while the cache stays full of the other's data.
  await scribble(live, 2 << 20);
  const wrote = Date.now();
  await fleet.waitConverged(wrote, 60_000, ['live']);
  t.equal(await sha256(live.replica), await sha256(live.source), 'the volume on the live master target replicated meanwhile');
  t.equal(((await fleet.status(PS))?.cache as Record<string, unknown>).backpressure, true, 'while the dead one is still held back');

  fleet.start('mt-2');
  await fleet.waitConverged(Date.now(), 120_000);
  for (const v of volumes) t.equal(await sha256(v.replica), await sha256(v.source), `${v.id}: replica equals source after the master target returned`);
});
