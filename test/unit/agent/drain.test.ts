// Draining a volume for a planned failover when something is wrong: a capture that never makes a point,
// capture "none", the record of the drain failing to write, a restart, a damaged record, a resume cut short.
// A drain that fails leaves the volume protected; a drained volume stays drained across restarts and takes
// no more differentials until resume, which starts the resync before it forgets the drain. Real volume,
// tracker, journal and resync (replicator-lab.ts); the failing write is injected with t.mockImport.
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { codeOf, TidemarkError } from '../../../common/errors.js';
import type { Capture, CapturedView } from '../../../agent/capture/capture.js';
import { DRAINED_FILE, Drains } from '../../../agent/drain.js';
import { ScriptCapture } from '../../../agent/capture/script.js';
import { errnoError } from '../faults.js';
import { lab, log, replay, replicator, scribble } from './replicator-lab.js';

/** A crash-consistent snapshot-like capture (the live image file, marked CRASH). */
const crashConsistent = (c: Capture): Capture => ({ kind: 'reflink', begin: async (): Promise<CapturedView> => ({ ...(await c.begin()), consistency: 'CRASH' }) });

const rejection = (p: Promise<unknown>): Promise<TidemarkError | null> => p.then(() => null, (e: unknown) => (e instanceof TidemarkError ? e : Object.assign(new TidemarkError('TM_ERR_IO', `not a TidemarkError: ${String(e)}`))));

t.test('capture "none" cannot drain: refused at once, nothing recorded', async (t) => {
  const l = await lab(t, 'drain-none');
  const { r, volumesDir } = await replicator(t, l);
  const drains = new Drains(volumesDir, log);
  await drains.open(['v1']);
  t.equal((await rejection(drains.request(r)))?.code, 'TM_ERR_CAPTURE');
  t.notOk(fs.existsSync(path.join(volumesDir, 'v1', DRAINED_FILE)));
  t.equal((await drains.cycle(r, () => {})).length, 1, 'the volume goes on cycling');
});

t.test('a capture that never makes a point: TM_ERR_CAPTURE after 3 passes, naming why; still protected', async (t) => {
  const l = await lab(t, 'drain-fuzzy');
  const { r, volumesDir, journal } = await replicator(t, l, { capture: (_c, volume) => new ScriptCapture('v1', volume, { pre: 'exit 7', timeoutMs: 5000, tag: 'final' }, log) });
  const drains = new Drains(volumesDir, log);
  await drains.open(['v1']);
  const asked = rejection(drains.request(r));
  t.strictSame(await drains.cycle(r, () => {}), [], 'the cycle that takes the drain request');
  const err = await asked;
  t.equal(err?.code, 'TM_ERR_CAPTURE');
  t.match(err?.message, /no final recovery point of v1 after 3 passes.*pre script \(exit\) failed \(exit status 7\)/, 'naming the capture failure');
  t.notOk(fs.existsSync(path.join(volumesDir, 'v1', DRAINED_FILE)), 'nothing recorded');
  t.equal(drains.get('v1'), null, 'not drained');
  await scribble(l);
  const next = await drains.cycle(r, () => {});
  t.equal(next.length, 1, 'the volume is still protected: it cycles');
  t.ok((await replay(journal)).equals(await fsp.readFile(l.source)), 'and its journal holds every write');
});

t.test('the drain record failing to write (ENOSPC): not drained, and asking again succeeds', async (t) => {
  const l = await lab(t, 'drain-enospc');
  const { r, volumesDir } = await replicator(t, l, { capture: crashConsistent });
  let fail = true;
  const durable = await import('../../../common/durable.js');
  const { Drains: FaultyDrains } = await t.mockImport<typeof import('../../../agent/drain.js')>('../../../agent/drain.js', {
    '../../../common/durable.js': { ...durable, writeFileDurable: (f: string, d: string) => (fail ? Promise.reject(errnoError('ENOSPC')) : durable.writeFileDurable(f, d)) },
  });
  const drains = new FaultyDrains(volumesDir, log);
  await drains.open(['v1']);
  const asked = drains.request(r).then(() => null, (e: unknown) => e);
  await drains.cycle(r, () => {});
  t.equal(codeOf(await asked), 'TM_ERR_DISK_FULL');
  t.equal(drains.get('v1'), null, 'not drained');
  fail = false;
  const again = drains.request(r);
  await drains.cycle(r, () => {});
  const p = await again;
  t.equal(p.seq, r.journal.lastSeq, 'the final point is the last differential');
  t.equal(p.consistency, 'CRASH');
  t.ok((await replay(r.journal)).equals(await fsp.readFile(l.source)), 'holding every write');
});

t.test('drained: kept across a restart, no more differentials, the same point when asked again', async (t) => {
  const l = await lab(t, 'drain-restart');
  const { r, volumesDir } = await replicator(t, l, { capture: crashConsistent });
  const drains = new Drains(volumesDir, log);
  await drains.open(['v1']);
  const asked = drains.request(r);
  await drains.cycle(r, () => {});
  const point = await asked;
  await scribble(l);
  const restarted = await replicator(t, l, { capture: crashConsistent });
  const again = new Drains(volumesDir, log);
  await again.open(['v1']);
  t.strictSame(again.get('v1'), point, 'the drain survived the restart');
  t.strictSame(await again.cycle(restarted.r, () => {}), [], 'no cycle runs');
  t.equal(restarted.journal.lastSeq, point.seq, 'nothing journaled after the final point');
  t.strictSame(await again.request(restarted.r), point, 'asking again answers with the same point');
});

t.test('a damaged drain record: the volume stays drained (not protected), a drain asks for a resume, resume works', async (t) => {
  const l = await lab(t, 'drain-damaged');
  const { r, volumesDir } = await replicator(t, l, { capture: crashConsistent });
  const file = path.join(volumesDir, 'v1', DRAINED_FILE);
  for (const content of ['{"volume":"v1","seq":', '{"volume":"v1"}', '']) {
    await fsp.writeFile(file, content);
    const drains = new Drains(volumesDir, log);
    await t.resolves(drains.open(['v1']), `${JSON.stringify(content)}: the agent starts`);
    t.ok(drains.get('v1'), 'and the volume is drained');
    t.strictSame(await drains.cycle(r, () => {}), [], 'no cycle runs: replicating onto a failed-over replica would be worse');
    const err = await rejection(drains.request(r));
    t.equal(err?.code, 'TM_ERR_STATE_CORRUPT', 'a drain cannot answer with its point');
    t.match(err?.message, new RegExp(`${DRAINED_FILE}.*tidemark resume v1`), 'and says what to do');
  }
  const drains = new Drains(volumesDir, log);
  await drains.open(['v1']);
  t.equal(await drains.resume(r), true, 'resume protects it again');
  t.ok(r.resync.active, 'starting with a resync');
  t.notOk(fs.existsSync(file));
  t.equal(drains.get('v1'), null);
});

t.test('resume cut short after the resync started: still drained, and resuming again finishes it', async (t) => {
  const l = await lab(t, 'drain-resume');
  const { r, volumesDir } = await replicator(t, l, { capture: crashConsistent });
  const drains = new Drains(volumesDir, log);
  await drains.open(['v1']);
  const asked = drains.request(r);
  await drains.cycle(r, () => {});
  await asked;
  const durable = await import('../../../common/durable.js');
  const { Drains: FaultyDrains } = await t.mockImport<typeof import('../../../agent/drain.js')>('../../../agent/drain.js', {
    '../../../common/durable.js': { ...durable, unlinkDurable: () => Promise.reject(errnoError('EIO', 'unlink')) },
  });
  const faulty = new FaultyDrains(volumesDir, log);
  await faulty.open(['v1']);
  t.equal(codeOf(await faulty.resume(r).then(() => null, (e: unknown) => e)), 'TM_ERR_IO');
  t.ok(r.resync.active, 'the resync was started first (durably)');
  const restarted = new Drains(volumesDir, log);
  await restarted.open(['v1']);
  t.ok(restarted.get('v1'), 'the volume is still drained after a restart');
  t.equal(await restarted.resume(r), true, 'and resuming again finishes');
  t.equal(restarted.get('v1'), null);
});
