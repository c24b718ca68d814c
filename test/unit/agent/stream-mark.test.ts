// A view cut by a marker in the data-mode write stream (capture "freeze" with tracker "data",
// agent/capture/data-freeze.ts): the replicator passes the marker to the tracker, journals the slices
// before it as CRASH points (no tag), holds the view until a collection reaches the marker, journals that
// one with the view's class and tags (also when it is empty), and releases the view with the point's
// sequence number; a slice at the marker that is not a point drops the tag (FUZZY, released without a seq).
import { promises as fsp } from 'node:fs';
import t from 'tap';
import type { CapturedView } from '../../../agent/capture/capture.js';
import type { Collection, Tracker } from '../../../agent/trackers/tracker.js';
import { lab, replay, replicator, scribble } from './replicator-lab.js';

t.test('a stream marker: CRASH slices before it, the tag on the slice that reaches it, held until then', async (t) => {
  const l = await lab(t, 'stream-mark');
  const released: Array<number | undefined> = [];
  const untils: Array<number | undefined> = [];
  // What the tracker says of each collection: a point? the marker reached?
  const script: Array<{ point: boolean; marked: boolean }> = [];
  let token = 100;
  const { r, journal } = await replicator(t, l, {
    capture: (c) => ({
      kind: 'stream',
      begin: async (): Promise<CapturedView> => ({ ...(await c.begin()), consistency: 'APP', tags: ['nightly'], streamMark: ++token, release: async (seq?: number) => { released.push(seq); } }),
    }),
    tracker: (tr) => ({
      collect: async (...a: Parameters<Tracker['collect']>): Promise<Collection> => {
        untils.push(a[3]);
        const next = script.shift() ?? { point: true, marked: true };
        return { ...(await tr.collect(...a)), more: false, ...next };
      },
    }),
  });
  const header = async (seq: number | null): Promise<{ consistency: string; tags: string[] }> => (await journal.load(seq!, async () => {})).header;

  // The first cycle sends the whole volume, short of the marker: a CRASH point, no tag, the view held.
  script.push({ point: true, marked: false });
  const a = await r.cycle();
  t.same(await header(a.seq), { ...(await header(a.seq)), consistency: 'CRASH', tags: [] }, 'a slice before the marker is a CRASH point with no tag');
  t.same(released, [], 'the view is held: its marker is not reached');
  t.equal(untils[0], 101, 'the tracker was asked for the marker');
  // The next cycle goes on with the same view and reaches the marker, with nothing new: still journaled.
  script.push({ point: true, marked: true });
  const b = await r.cycle();
  t.equal(untils[1], 101, 'the held view asks for the same marker');
  t.not(b.seq, null, 'the slice at the marker is journaled, empty as it is');
  t.same(await header(b.seq), { ...(await header(b.seq)), consistency: 'APP', tags: ['nightly'] }, 'it carries the view\'s class and tag');
  t.same(released, [b.seq], 'and the view is released with that point');
  // A new view whose slice at the marker is not a point (writes dropped): the tag is dropped.
  await scribble(l);
  script.push({ point: false, marked: true });
  const c = await r.cycle();
  t.same(await header(c.seq), { ...(await header(c.seq)), consistency: 'FUZZY', tags: [] }, 'not a point: fuzzy, no tag');
  t.same(released, [b.seq, undefined], 'released without a point: the capture counts the tag dropped');
  t.equal(untils[2], 102, 'a new view, a new marker');
  t.ok((await replay(journal)).equals(await fsp.readFile(l.source)), 'the journal replayed is the source, byte for byte');
});
