// A small process-server cache and a master target that goes away while agents keep writing: the cache
// fills to its quota and no further, the process server slows and then stops its agents (Backpressure on
// the wire, visible in both status snapshots), the agents keep their changes in their journals and then,
// past their journal quota, in their dirty maps (bitmap mode); health goes critical for space and backlog
// age. When the master target returns everything drains, backpressure clears and every replica equals
// its source.
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { makeImage, scratchDir, sha256, sleep, startWriter } from './helpers.js';

const MiB = 1 << 20;
const SIZE_MIB = 32;
const QUOTA = 8 * MiB;
const MAX_DIFF = MiB;
const VOLUMES = ['vol1', 'vol2'];

type Json = Record<string, unknown>;

async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(250);
  }
}

t.test('cache quota: backpressure to agents, bitmap mode past their journals, health; all drains after', async (t) => {
  const dir = await scratchDir(t, 'backpressure');
  const volumes = VOLUMES.map((id) => ({ id, source: path.join(dir, `${id}.img`), replica: path.join(dir, `${id}-replica.img`) }));
  for (const v of volumes) await makeImage(v.source, SIZE_MIB, 8);
  const lab = await Lab.create({
    dir,
    volumes,
    agent: { cycleIntervalMs: 300, maxDiffBytes: MAX_DIFF, resyncWindowBytes: 2 * MiB, journalQuotaBytes: 2 * MiB, window: 4 },
    ps: { window: 4, cache: { quotaBytes: QUOTA, backlogWarningMs: 3000, backlogCriticalMs: 6000 } },
  });
  t.teardown(() => lab.stopAll());
  const ps = async (): Promise<Json | null> => lab.status('ps');
  const agent = async (): Promise<Json | null> => lab.status('agent');

  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);

  // The master target goes away; the agents keep writing.
  await lab.stop('mt');
  const writers = volumes.map((v) => startWriter(v.source, SIZE_MIB * MiB, 15));
  t.teardown(() => Promise.all(writers.map((w) => w.stop())));

  const paused = await until('backpressure at the process server', async () => {
    const s = await ps();
    return (s?.cache as Json | undefined)?.backpressure === true && s;
  }, 60_000);
  t.pass('the process server signals backpressure in its status');

  const inBitmap = await until('both agent volumes in bitmap mode', async () => {
    const a = await agent();
    const vols = a?.volumes as Json[] | undefined;
    return vols?.length === VOLUMES.length && vols.every((v) => v.mode === 'bitmap') && a;
  }, 90_000);
  const up = inBitmap.uploader as Json;
  t.equal(up.backpressure, true, 'the agent knows it was asked to pause');
  t.equal(up.connected, true, 'and stays connected: no reconnects');
  t.equal(up.downSince, 0, 'a paused process server is not counted as down');
  for (const v of inBitmap.volumes as Json[]) {
    t.match(v.modeReason, /journal quota reached/, `${String(v.id)}: bitmap mode because its journal is full, not because the process server is unreachable`);
  }

  // Paused: nothing new is taken, the cache holds no more than its quota plus what was in flight. Once
  // every backlog is past its critical age nothing changes any more, so nothing more is logged.
  await until('every backlog past its critical age', async () => ((await ps())?.volumes as Json[] | undefined)?.every((v) => Number(v.backlogAgeMs) > 7000), 30_000);
  const before = await ps();
  const logBefore = (await lab.logLines('ps')).length;
  // The agents have something to send all along: their writers keep writing, and differentials wait in
  // their journals. Only with that seen does "nothing received" mean they were held back.
  const writtenBefore = writers.map((w) => w.written);
  await until('every writer wrote another 4 MiB', async () => writers.every((w, i) => w.written - writtenBefore[i]! >= 4 * MiB), 60_000);
  const waiting = ((await agent())?.volumes as Json[]).map((v) => Number(v.journalFiles));
  t.ok(waiting.every((n) => n > 0), `differentials wait in every agent's journal (${waiting.join(', ')} files)`);
  const during = (await ps())!;
  const cache = during.cache as Json;
  t.equal(cache.backpressure, true, 'still paused while the master target is away');
  t.equal((during.receiver as Json).diffsReceived, (before!.receiver as Json).diffsReceived, 'no differential received while the agents are paused');
  t.ok(Number(cache.usedBytes) <= QUOTA + VOLUMES.length * (MAX_DIFF + 64 * 1024), `cache use ${Number(cache.usedBytes)} bytes stays within the ${QUOTA}-byte quota plus the differentials in flight when it paused`);
  t.equal(cache.quotaBytes, QUOTA, 'the configured quota is in force');
  t.equal(cache.health, 'critical', 'health is critical');
  const reasons = (cache.reasons as string[]).join('\n');
  t.match(reasons, /cache [\d.]+% free/, 'because of free space');
  t.match(reasons, /volume vol1: oldest differential not yet forwarded is \d+ s old/, 'and because of backlog age');
  const perVolume = during.volumes as Json[];
  t.ok(perVolume.every((v) => Number(v.backlogAgeMs) > 7000), 'each volume reports its backlog age');
  t.ok(Number((during.receiver as Json).diffsDelayed) > 0, 'differentials were slowed down before the stop');
  const newLines = (await lab.logLines('ps')).slice(logBefore).map((l) => String(l.msg));
  t.strictSame(newLines.filter((m) => m.startsWith('cache')), [], 'a steady state logs nothing new: transitions are logged once');
  t.ok(paused, 'backpressure was seen');

  const written = await Promise.all(writers.map((w) => w.stop()));
  const stoppedAt = Date.now();
  lab.start('mt');
  await lab.waitConverged(stoppedAt, 180_000);

  const after = (await ps())!;
  t.match(after.cache, { backpressure: false, health: 'ok', reasons: [] }, 'backpressure cleared, health ok');
  t.equal(((await agent())!.uploader as Json).backpressure, false, 'the agent is sending again');
  t.ok(((await agent())!.volumes as Json[]).every((v) => v.mode === 'data'), 'back in data mode');
  const compression = (after.volumes as Json[])[0]!.compression as Json;
  t.ok(Number(compression.skippedExtents) > 0, `random writes are stored raw (${String(compression.skippedExtents)} extents skipped, ${String(compression.compressedExtents)} compressed)`);
  for (const [i, v] of volumes.entries()) {
    t.ok(written[i]! > 4 * MiB, `${v.id}: ${written[i]} bytes written while the master target was away`);
    t.equal(await sha256(v.replica), await sha256(v.source), `${v.id}: replica equals source`);
  }
  const logs = (await lab.logLines('ps')).map((l) => String(l.msg));
  t.equal(logs.filter((m) => m === 'cache nearly full: agents told to stop sending these volumes').length, logs.filter((m) => m === 'cache has room again: agents told to resume').length, 'every pause was followed by a resume');
});
