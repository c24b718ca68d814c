// One volume's cycle when a step fails: the journal write (ENOSPC), the capture, the tracker's commit after
// the differential is durable, a view that did not stay consistent. Real image file, scan tracker, journal
// and resync in a temp dir; the failure is one method of a real collaborator (test/unit/faults.ts). What
// the journal holds, replayed in order onto zeros, must be the source byte for byte: no block is lost.
import { promises as fsp } from 'node:fs';
import t from 'tap';
import { codeOf, tmError } from '../../../common/errors.js';
import type { Capture, CapturedView } from '../../../agent/capture/capture.js';
import type { Tracker } from '../../../agent/trackers/tracker.js';
import { Crash, errnoError, failOn } from '../faults.js';
import { lab, replay, replicator, scribble } from './replicator-lab.js';

const errOf = (p: Promise<unknown>): Promise<unknown> => p.then(() => null, (e: unknown) => e);

t.test('a journal write that fails (ENOSPC) loses no block: the next cycle journals them', async (t) => {
  const l = await lab(t, 'enospc');
  const { r, journal } = await replicator(t, l, { journal: (j) => ({ write: failOn(j.write.bind(j), (c) => c % 2 === 1, () => errnoError('ENOSPC')) }) });
  for (let round = 0; round < 3; round++) {
    const before = journal.lastSeq;
    const err = await errOf(r.cycle());
    t.equal(codeOf(err), 'TM_ERR_DISK_FULL', `round ${round}: the cycle fails with the disk full`);
    t.equal(journal.lastSeq, before, 'and journals nothing');
    const ok = await r.cycle();
    t.equal(ok.seq, before + 1, 'the next cycle journals the blocks');
    t.ok(ok.bytes > 0, `${ok.bytes} bytes`);
    await scribble(l);
  }
  t.equal(codeOf(await errOf(r.cycle())), 'TM_ERR_DISK_FULL', 'after the last writes, a failing write once more');
  await r.cycle();
  t.ok((await replay(journal)).equals(await fsp.readFile(l.source)), 'the journal replayed is the source, byte for byte');
});

t.test('a capture that fails journals nothing and keeps the blocks dirty', async (t) => {
  const l = await lab(t, 'capture');
  let fail = true;
  const { r, journal } = await replicator(t, l, {
    capture: (c) => ({ kind: 'flaky', begin: () => (fail ? Promise.reject(tmError('TM_ERR_CAPTURE', 'freeze timed out (injected)')) : c.begin()) }),
  });
  t.equal(codeOf(await errOf(r.cycle())), 'TM_ERR_CAPTURE', 'the cycle reports the capture failure');
  t.equal(journal.lastSeq, 0, 'nothing journaled');
  fail = false;
  t.equal((await r.cycle()).seq, 1);
  t.ok((await replay(journal)).equals(await fsp.readFile(l.source)), 'every block came with the next capture');
});

t.test('killed after the differential is durable, before the tracker recorded it: the restart sends them again', async (t) => {
  const l = await lab(t, 'commit');
  const first = await replicator(t, l);
  await first.r.cycle();
  await scribble(l);
  const crashing = await replicator(t, l, {
    tracker: (tr) => ({ collect: async (...a: Parameters<Tracker['collect']>) => ({ ...(await tr.collect(...a)), commit: () => Promise.reject(new Crash('killed before the tracker saved its map')) }) }),
  });
  t.ok((await errOf(crashing.r.cycle())) instanceof Crash, 'the cycle stopped at the injected crash');
  t.equal(crashing.journal.lastSeq, 2, 'the differential was durable');
  const restarted = await replicator(t, l);
  const again = await restarted.r.cycle();
  t.equal(again.seq, 3, 'the restarted agent journals the blocks its tracker never marked clean');
  t.ok(again.bytes > 0, 'with their data');
  t.ok((await replay(restarted.journal)).equals(await fsp.readFile(l.source)), 'and the journal replayed is the source');
});

t.test('a view that did not stay consistent is journaled fuzzy, and the next consistent view makes the point', async (t) => {
  const l = await lab(t, 'settle');
  let intact = false;
  const crashConsistent = (c: Capture): Capture => ({
    kind: 'snapshot',
    begin: async (): Promise<CapturedView> => ({ ...(await c.begin()), consistency: 'CRASH', settle: async () => intact }),
  });
  const { r, journal } = await replicator(t, l, { capture: crashConsistent });
  const fuzzy = await r.cycle();
  t.equal((await journal.load(fuzzy.seq!, async () => {})).header.consistency, 'FUZZY', 'a view thawed early is not a point');
  t.equal(r.points.crash, null, 'and no crash point is recorded');
  intact = true;
  const point = await r.cycle();
  t.equal(point.seq, fuzzy.seq! + 1, 'nothing changed, yet a differential follows');
  const d = await journal.load(point.seq!, async () => {});
  t.equal(d.header.consistency, 'CRASH', 'making the replica\'s state a crash-consistent point');
  t.equal(d.extents.length, 0, 'with no data');
  t.equal(r.points.crash?.seq, point.seq);
  t.equal((await r.cycle()).seq, null, 'and an idle volume then journals nothing');
});
