// Fan-in: many agents into one process server, routed to three master targets. One master target
// killed and another hung (SIGSTOP, its connection left open) must not stall the volumes routed to
// the third; when both are back their volumes catch up, and every replica equals its source.
import { operatorRequest } from '../../common/operator-socket.js';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Fleet, PS, type FleetVolume } from '../../lab/fleet.js';
import { scratchDir, sha256 } from './helpers.js';
import { Rng } from '../seed.js';

const rng = new Rng('fan-in');

const AGENTS = 5;
const VOLUMES_PER_AGENT = 20;
const MASTER_TARGETS = ['mt-1', 'mt-2', 'mt-3'];
const VOLUME_BYTES = 1 << 20;
const DATA_BYTES = 128 << 10;

/** Random 4 KiB blocks at random places in each volume. */
async function scribble(vols: FleetVolume[], blocks: number): Promise<void> {
  for (const v of vols) {
    const fh = await fsp.open(v.source, 'r+');
    try {
      for (let i = 0; i < blocks; i++) await fh.write(rng.bytes(4096), 0, 4096, rng.int(0, VOLUME_BYTES / 4096) * 4096);
    } finally {
      await fh.close();
    }
  }
}

async function identical(vols: FleetVolume[]): Promise<{ equal: string[]; differ: string[] }> {
  const equal: string[] = [];
  const differ: string[] = [];
  for (const v of vols) ((await sha256(v.replica)) === (await sha256(v.source)) ? equal : differ).push(v.id);
  return { equal, differ };
}

t.test(`${AGENTS} agents x ${VOLUMES_PER_AGENT} volumes to ${MASTER_TARGETS.length} master targets: one dead and one hung stall nobody else`, async (t) => {
  const dir = await scratchDir(t, 'fan-in');
  const agents = Array.from({ length: AGENTS }, (_, i) => `agent-${i + 1}`);
  const volumes: FleetVolume[] = [];
  for (const [a, agent] of agents.entries()) {
    for (let i = 0; i < VOLUMES_PER_AGENT; i++) {
      const id = `a${a + 1}-v${String(i).padStart(2, '0')}`;
      const source = path.join(dir, `${id}.img`);
      await fsp.writeFile(source, rng.bytes(DATA_BYTES));
      await fsp.truncate(source, VOLUME_BYTES);
      // Every agent has volumes on every master target.
      volumes.push({ id, agent, masterTarget: MASTER_TARGETS[(a + i) % MASTER_TARGETS.length]!, source, replica: path.join(dir, `${id}.replica.img`) });
    }
  }
  const fleet = await Fleet.create({
    dir, agents, masterTargets: MASTER_TARGETS, volumes,
    agent: { cycleIntervalMs: 1000 },
    // A cap well above what this moves, so the one shared throttle is in the path of every forwarder.
    ps: { throttle: { rateBytesPerSec: 32 << 20 } },
  });
  t.teardown(() => fleet.stopAll());
  const on = (mt: string): FleetVolume[] => volumes.filter((v) => v.masterTarget === mt);
  const ids = (vs: FleetVolume[]): string[] => vs.map((v) => v.id);

  fleet.startAll();
  const t0 = Date.now();
  await fleet.waitConverged(t0, 90_000);
  t.comment(`initial replication took ${Date.now() - t0} ms`);
  t.same((await identical(volumes)).differ, [], `initial replication: all ${volumes.length} replicas equal their sources`);

  await fleet.stop('mt-3'); // dead: connection refused from now on
  fleet.pause('mt-2'); // hung: its connection stays open and nothing is read or acknowledged
  // A resync needs the replica's hashes: agent-1 asks about a volume on the hung master target.
  const resyncVol = on('mt-2').find((v) => v.agent === 'agent-1')!;
  const res = await operatorRequest(fleet.stateDir('agent-1'), 'resync', new URLSearchParams({ volume: resyncVol.id, mode: 'resync' }));
  t.equal(res.started, true, `resync of ${resyncVol.id} requested (operator socket)`);
  await scribble(volumes, 8);
  const wroteAt = Date.now();
  await fleet.waitConverged(wroteAt, 60_000, ids(on('mt-1')));
  t.comment(`mt-1 volumes converged ${Date.now() - wroteAt} ms after the writes`);
  t.same((await identical(on('mt-1'))).differ, [], `with mt-2 hung and mt-3 down, the ${on('mt-1').length} volumes on mt-1 kept replicating: replicas equal sources`);
  const stuck = await identical([...on('mt-2'), ...on('mt-3')]);
  t.same(stuck.equal, [], 'and none of the volumes on mt-2 or mt-3 got their new data meanwhile (the test stopped them for real)');
  const ps = await fleet.status(PS);
  const fwd = ps?.forwarders as Record<string, { connected: boolean }>;
  t.equal(fwd['mt-1']?.connected, true, 'the process server is connected to mt-1');
  t.equal(fwd['mt-3']?.connected, false, 'and knows mt-3 is down');
  const backlog = (ps?.volumes as { id: string; backlogFiles: number }[]).filter((v) => v.backlogFiles > 0).map((v) => v.id);
  t.ok(backlog.length > 0 && backlog.every((v) => on('mt-2').concat(on('mt-3')).some((x) => x.id === v)), `the cache holds a backlog only for the stopped master targets' volumes (${backlog.length} volumes)`);

  fleet.resume('mt-2');
  fleet.start('mt-3');
  const backAt = Date.now();
  await fleet.waitConverged(wroteAt, 90_000);
  t.comment(`all converged ${Date.now() - backAt} ms after mt-2 and mt-3 came back`);
  t.same((await identical(volumes)).differ, [], `after both came back every one of the ${volumes.length} replicas equals its source`);
});
