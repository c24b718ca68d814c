// Data mode's epochs (issue 13): the tracker turns an epoch once a proof marker placed after the last turn
// is journaled, and only then may the older epoch's bitmap be emptied (it is what an agent restart
// re-reads). A collection holding the proof marker that is never committed (the journal write failed)
// used to leave the epoch unturned for good: the marker was gone and no new one was placed, so every
// block written since grew the restart's re-read. Now the lost collection's blocks are saved dirty and
// that counts as journaled for the proof. On a real loop device with the real programs.
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { DataTracker, dataPinName } from '../../agent/trackers/data.js';
import { Volume } from '../../agent/volume.js';
import { ensureBpffs } from '../../native/datacap.js';
import { attachLoop, makeImage, privileged, tempDir, type TestLike } from './require-root.js';
import { sleep } from './protected.js';

const SIZE = 16 * 2 ** 20;
const BS = 4096;
/** Over the tracker's FLIP_MS: a proof marker may be placed again. */
const PAST_FLIP_MS = 1100;

/** A data tracker on a fresh loop device, a view of the device, and a writer of 8 blocks at a time (fdatasync'd). */
async function trackerOnLoop(t: TestLike): Promise<{ tr: DataTracker; view: Volume; write: () => void }> {
  const dev = attachLoop(t, makeImage(t, SIZE / 2 ** 20));
  const dir = tempDir(t);
  const pinKey = path.join(dir, 'vol');
  const tr = new DataTracker(dir, dev, SIZE, BS, pino({ level: 'silent' }), { ringMiB: 1, queueMiB: 4, fifoPriority: 0, pinKey, onLost: async () => {} });
  t.teardown(async () => {
    await tr.close().catch(() => {});
    fs.rmSync(path.join(ensureBpffs(), dataPinName(pinKey)), { recursive: true, force: true });
  });
  await tr.open();
  const view = await Volume.open(dev);
  t.teardown(() => view.close());
  const fd = fs.openSync(dev, 'r+');
  t.teardown(() => fs.closeSync(fd));
  let n = 0;
  const write = (): void => {
    for (let i = 0; i < 8; i++) fs.writeSync(fd, Buffer.alloc(BS, ++n % 251), 0, BS, ((n * 7) % (SIZE / BS)) * BS);
    fs.fdatasyncSync(fd);
  };
  return { tr, view, write };
}

/** Out of the fresh capture's gap: collections committed until a point is possible. */
async function leaveGap(tr: DataTracker, view: Volume, write: () => void): Promise<void> {
  for (let i = 0; !tr.pointPossible(); i++) {
    if (i > 50) throw new Error(`the tracker never left its gap: ${JSON.stringify(tr.stats)}`);
    write();
    await (await tr.collect(view, 8 * 2 ** 20)).commit();
    await sleep(100);
  }
}

t.test('data mode: a lost collection holding the proof marker does not stall the epochs', async (t) => {
  if (!privileged(t)) return;
  const { tr, view, write } = await trackerOnLoop(t);
  /** Writes, once the reader has queued their records (so the next collection takes them). */
  const writeQueued = async (): Promise<void> => {
    write();
    for (const end = Date.now() + 5000; tr.dirtyBlocks < 8 && Date.now() < end; ) await sleep(5);
  };
  const collectAndCommit = async (): Promise<void> => {
    const c = await tr.collect(view, 8 * 2 ** 20);
    await c.commit();
  };
  await leaveGap(tr, view, write);
  // A proof marker is placed by the first collection after FLIP_MS (at its start, so it is queued behind
  // what that collection takes); writes follow it, then a capture's marker ends the second collection:
  // the proof marker is in one of the two, each holding writes, and neither is committed.
  await sleep(PAST_FLIP_MS);
  await writeQueued();
  const first = await tr.collect(view, 8 * 2 ** 20); // never committed
  t.ok(first.extents.length > 0, 'the first collection holds writes');
  await writeQueued();
  const mark = tr.streamMark();
  t.ok(mark !== null, 'a capture marker was placed');
  const second = await tr.collect(view, 8 * 2 ** 20, false, mark!); // never committed either
  t.ok(second.marked && second.extents.length > 0, 'the second ends at the capture marker and holds writes');
  const flips = tr.stats.flips!;
  // From here on every collection is committed, past FLIP_MS apart: the epochs must turn again.
  for (let i = 0; i < 6 && tr.stats.flips === flips; i++) {
    write();
    await collectAndCommit();
    await sleep(PAST_FLIP_MS);
    await collectAndCommit();
  }
  t.ok(tr.stats.flips! > flips, `the epochs turned again after the lost collections (flips ${flips} -> ${tr.stats.flips})`);
});

// The epoch's FLIP_MS and a capture marker's MARK_WAIT_MS are intervals: measured on the wall clock, a
// clock step (NTP, an operator's date) made a proof marker look old the moment it was placed — the epoch
// could turn with a record of the older epoch still in flight in the program, and its bitmap (what an
// agent restart re-reads) be emptied before that record was journaled — and made a capture's marker
// look lost, giving its point up. Here the wall clock jumps an hour at every reading.
t.test('data mode: a wall clock that jumps neither turns epochs early nor gives a marker up', async (t) => {
  if (!privileged(t)) return;
  const realNow = Date.now;
  t.teardown(() => {
    Date.now = realNow;
  });
  const { tr, view, write } = await trackerOnLoop(t);
  await leaveGap(tr, view, write);
  let jumps = 0;
  Date.now = () => realNow() + ++jumps * 3_600_000;
  const flips = tr.stats.flips!;
  const started = performance.now();
  let marked = 0;
  // Collections a few ms apart for well under FLIP_MS of real time: at most one turn may fall in it.
  while (performance.now() - started < 600) {
    write();
    const mark = tr.streamMark();
    const c = await tr.collect(view, 8 * 2 ** 20, false, mark ?? undefined);
    if (c.marked && c.point) marked++;
    await c.commit();
    await sleep(20);
  }
  Date.now = realNow;
  t.ok(tr.stats.flips! - flips <= 1, `epochs turned ${tr.stats.flips! - flips} times in 600 ms (FLIP_MS is 1000)`);
  t.ok(marked > 0, `capture markers kept their points (${marked})`);
});
