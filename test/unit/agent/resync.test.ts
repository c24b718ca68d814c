// The resync engine on a real volume, journal and tracker; only the transport (`ask`) is injected, so the
// questions it asks, and what it journals from the answers, can be checked exactly.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { NoCapture } from '../../../agent/capture/none.js';
import { Journal } from '../../../agent/journal.js';
import { Resync, type Ask, type ResyncMode } from '../../../agent/resync.js';
import { ScanTracker } from '../../../agent/trackers/scan.js';
import { Volume } from '../../../agent/volume.js';
import { silentLogger } from '../../../common/log.js';
import { readHrl } from '../../../proto/hrl.js';
import type { HashQuery } from '../../../proto/messages.js';
import { Rng } from '../../seed.js';

const rng = new Rng('resync');

const BS = 4096;
const SIZE = 4 << 20;
const WINDOW = 1 << 20;

async function setup(t: Test) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-resync-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const img = path.join(dir, 'disk.img');
  fs.writeFileSync(img, rng.bytes(SIZE));
  const volume = await Volume.open(img);
  t.teardown(() => volume.close());
  const journal = new Journal(dir, 'v', silentLogger());
  await journal.open({ sizeBytes: SIZE, blockSize: BS });
  const tracker = new ScanTracker(dir, SIZE, BS, silentLogger());
  await tracker.open();
  const asked: Array<Omit<HashQuery, 'requestId'>> = [];
  /** The replica differs in block 3 of every window: every level reports the ranges that contain it. */
  const ask: Ask = async (q) => {
    asked.push(q);
    const differing = q.ranges.filter((r) => {
      const first = r * q.rangeBlocks;
      return Array.from({ length: q.rangeBlocks }, (_, k) => first + k).some((b) => b % (WINDOW / BS) === 3);
    });
    return { volumeId: 'v', requestId: 0, differing };
  };
  const make = async () => {
    const r = new Resync(dir, 'v', SIZE, BS, { capture: new NoCapture(volume), tracker, journal, ask, log: silentLogger(), windowBytes: WINDOW });
    await r.open();
    return r;
  };
  return { dir, img, journal, asked, make };
}

t.test('only the differing blocks are journaled, with the source bytes', async (t) => {
  const { img, journal, make } = await setup(t);
  const r = await make();
  await r.start('resync', 'test');
  while (!(await r.step()));
  const source = fs.readFileSync(img);
  const diffs = await Promise.all(journal.pending().map((s) => readHrl(journal.file(s))));
  const extents = diffs.flatMap((d) => d.extents);
  t.same(extents.map((e) => e.offset), [0, 1, 2, 3].map((w) => w * WINDOW + 3 * BS), 'block 3 of each window, nothing else');
  t.ok(extents.every((e) => e.data.equals(source.subarray(e.offset, e.offset + e.length))), 'carrying the source bytes');
  t.equal(r.state.bytesSent, 4 * BS);
  t.ok(r.state.endPending, 'the pass owes an end marker');
});

t.test('windows of a resync do not wait for each other; a window redone after a crash waits for what it journaled', async (t) => {
  const { dir, journal, asked, make } = await setup(t);
  const r = await make();
  await r.start('resync', 'test');
  await r.step();
  await r.step();
  const windowAsks = (n: number) => asked.filter((q) => q.rangeBlocks === 256).slice(n, n + 1)[0]!;
  t.equal(windowAsks(0).afterSeq, 0, 'first window: after what came before the pass');
  t.equal(windowAsks(1).afterSeq, 0, 'second window: not after the first window\'s differential');

  // A crash after the third window journaled its differential, before its cursor was saved.
  const saved = fs.readFileSync(path.join(dir, 'resync.json'));
  await r.step();
  const journaled = journal.lastSeq;
  await r.close(); // the crashed agent asks nothing more about the windows it had in flight
  fs.writeFileSync(path.join(dir, 'resync.json'), saved);
  const redo = await make();
  asked.length = 0;
  await redo.step();
  t.equal(asked[0]!.afterSeq, journaled, 'the redone window asks only after its earlier differential is applied');
});

t.test('a verify asks after everything journaled, and journals nothing', async (t) => {
  const { journal, asked, make } = await setup(t);
  const r = await make();
  await r.start('verify' as ResyncMode, 'test');
  while (!(await r.step()));
  t.equal(journal.pending().length, 0, 'nothing journaled');
  t.same(r.state.differing.map(([o]) => o), [0, 1, 2, 3].map((w) => w * WINDOW + 3 * BS), 'the differing ranges are reported');
  t.ok(asked.filter((q) => q.rangeBlocks === 256).every((q) => q.reread), 'the coarse level asks the replica to be re-read');
  t.notOk(r.state.endPending, 'a verify owes no end marker');
});

t.test('windows ahead are compared while the one before them waits; each is journaled in order, cursor after it', async (t) => {
  const { dir, journal } = await setup(t);
  const coarse: number[] = [];
  let release: () => void = () => {};
  const ahead = new Promise<void>((resolve) => (release = resolve));
  const volume = await Volume.open(path.join(dir, 'disk.img'));
  t.teardown(() => volume.close());
  const tracker = new ScanTracker(dir, SIZE, BS, silentLogger());
  await tracker.open();
  const r = new Resync(dir, 'v', SIZE, BS, {
    capture: new NoCapture(volume), tracker, journal, log: silentLogger(), windowBytes: WINDOW,
    ask: async (q) => {
      const window = (q.ranges[0]! * q.rangeBlocks * BS) / WINDOW;
      if (q.rangeBlocks === 256) coarse.push(window);
      // The first window is answered only once the two after it have been asked about: one question at a
      // time would wait here for ever (the test's timeout fails it).
      if (coarse.includes(1) && coarse.includes(2)) release();
      if (window === 0) await ahead;
      return { volumeId: 'v', requestId: 0, differing: q.ranges.filter((x) => (x * q.rangeBlocks) % (WINDOW / BS) === 0) };
    },
  });
  await r.open();
  await r.start('resync', 'test');
  const cursors: number[] = [];
  for (;;) {
    const done = await r.step();
    cursors.push((JSON.parse(fs.readFileSync(path.join(dir, 'resync.json'), 'utf8')) as { cursorBlock: number }).cursorBlock);
    if (done) break;
  }
  t.same(coarse.slice(0, 3).sort(), [0, 1, 2], 'windows 1 and 2 were asked about before window 0 was answered');
  t.equal(coarse.filter((w) => w === 0).length, 1, 'each window asked about once');
  t.same(cursors, [1, 2, 3, 4].map((w) => (w * WINDOW) / BS), 'the durable cursor advances a window a step, in order');
  const diffs = await Promise.all(journal.pending().map((s) => readHrl(journal.file(s))));
  t.same(diffs.map((d) => d.extents.map((e) => e.offset)), [0, 1, 2, 3].map((w) => [w * WINDOW]), 'one differential a window, journaled in window order');
});

t.test('a new pass drops the windows compared ahead for the old one', async (t) => {
  const { journal, asked, make } = await setup(t);
  const r = await make();
  await r.start('resync', 'test');
  await r.step(); // window 0 journaled; windows 1 and 2 compared ahead
  const before = journal.lastSeq;
  await r.start('resync', 'again');
  asked.length = 0;
  await r.step();
  t.equal(journal.lastSeq, before + 1, 'one differential: the new pass\'s first window');
  const last = await readHrl(journal.file(journal.lastSeq));
  t.same(last.extents.map((e) => e.offset), [3 * BS], 'from block 0 again, not the old pass\'s window 1');
  t.equal(r.state.cursorBlock, WINDOW / BS);
  await r.close();
});

t.test('where windows differ for much of their blocks, later windows ask about the leaves at once; what is journaled is the same', async (t) => {
  const { dir, img, journal } = await setup(t);
  const volume = await Volume.open(img);
  t.teardown(() => volume.close());
  const tracker = new ScanTracker(dir, SIZE, BS, silentLogger());
  await tracker.open();
  // The replica differs in every odd block (half of each window) but the last window, which it holds whole.
  const differs = (b: number): boolean => b % 2 === 1 && b < (3 * WINDOW) / BS;
  const asked: Array<Omit<HashQuery, 'requestId'>> = [];
  const r = new Resync(dir, 'v', SIZE, BS, {
    capture: new NoCapture(volume), tracker, journal, log: silentLogger(), windowBytes: WINDOW,
    ask: async (q) => {
      asked.push(q);
      return { volumeId: 'v', requestId: 0, differing: q.ranges.filter((x) => Array.from({ length: q.rangeBlocks }, (_, k) => x * q.rangeBlocks + k).some(differs)) };
    },
  });
  await r.open();
  await r.start('resync', 'test');
  const windowOf = (q: Omit<HashQuery, 'requestId'>): number => Math.floor((q.ranges[0]! * q.rangeBlocks * BS) / WINDOW);
  // One window at a time, so each knows how the one before it went.
  for (;;) {
    const done = await r.step();
    if (done) break;
  }
  const levels = (w: number): number[] => [...new Set(asked.filter((q) => windowOf(q) === w).map((q) => q.rangeBlocks))];
  t.same(levels(0), [256, 16, 1], 'the first window goes coarse to fine');
  t.ok([1, 2, 3].some((w) => levels(w).length === 1 && levels(w)[0] === 1), 'a window after one that differed by half is asked leaf by leaf, in one exchange');
  const leafAsks = asked.filter((q) => q.rangeBlocks === 1 && levels(windowOf(q)).length === 1);
  t.ok(leafAsks.every((q) => q.ranges.length === q.ranges.at(-1)! - q.ranges[0]! + 1), 'covering its blocks');
  const source = fs.readFileSync(img);
  const diffs = await Promise.all(journal.pending().map((s) => readHrl(journal.file(s))));
  const blocks = diffs.flatMap((d) => d.extents.flatMap((e) => Array.from({ length: e.length / BS }, (_, k) => e.offset / BS + k)));
  t.same(blocks, Array.from({ length: SIZE / BS }, (_, b) => b).filter(differs), 'exactly the differing blocks are journaled');
  t.ok(diffs.every((d) => d.extents.every((e) => e.data.equals(source.subarray(e.offset, e.offset + e.length)))), 'with the source bytes');
});

/** 16 windows and a short one (three blocks and a part block), big enough for the pass to reuse buffers. */
const BIG = 16 * WINDOW + 3 * BS + 100;

/**
 * A resync of a BIG volume read through a reader that records the buffers it was given to read into.
 * `readsInto: false` is a block device's direct read, which allocates its own buffer whatever it is given.
 */
async function bigSetup(t: Test, readsInto: boolean, ask: Ask) {
  const { dir, img, journal } = await setup(t);
  fs.writeFileSync(img, rng.bytes(BIG));
  const big = await Volume.open(img);
  t.teardown(() => big.close());
  const tracker = new ScanTracker(dir, BIG, BS, silentLogger());
  await tracker.open();
  const given: Buffer[] = [];
  const reader = {
    sizeBytes: big.sizeBytes,
    readsInto,
    read: (offset: number, length: number, into?: Buffer) => {
      if (into) given.push(into);
      return big.read(offset, length, readsInto ? into : undefined);
    },
  };
  const r = new Resync(dir, 'v', BIG, BS, { capture: new NoCapture(reader as unknown as Volume), tracker, journal, log: silentLogger(), windowBytes: WINDOW, ask });
  await r.open();
  return { r, img, journal, given };
}

/** Every window was read into a buffer of the pass's, and those were read into again: three at most. */
function checkReused(t: Test, given: Buffer[]): void {
  const distinct = new Set(given.map((b) => b.buffer)).size;
  t.equal(given.length, 17, 'every window read into a buffer of the pass\'s');
  t.ok(distinct <= 3, `no more buffers than the windows in flight at once (${distinct} for 17 windows)`);
}

/** The replica differs in the first block of every window. */
const firstBlockDiffers: Ask = async (q) => ({ volumeId: 'v', requestId: 0, differing: q.ranges.filter((x) => (x * q.rangeBlocks) % (WINDOW / BS) === 0) });

/** Every extent pending in the journal, read back from its file, checked against the source bytes. */
async function checkJournaled(t: Test, img: string, journal: Journal): Promise<number> {
  const source = fs.readFileSync(img);
  const diffs = await Promise.all(journal.pending().map((s) => readHrl(journal.file(s))));
  const extents = diffs.flatMap((d) => d.extents);
  t.ok(extents.every((e) => e.data.equals(source.subarray(e.offset, e.offset + e.length))), 'every journaled block carries the source bytes');
  return extents.length;
}

t.test('window buffers are read into again once their differing blocks are copied out', async (t) => {
  const { r, img, journal, given } = await bigSetup(t, true, firstBlockDiffers);
  await r.start('resync', 'test');
  while (!(await r.step()));
  checkReused(t, given);
  t.equal(await checkJournaled(t, img, journal), 17, 'the first block of each window, the short last one too');
});

t.test('an initial replication reads into its window buffers again; what the journal holds keeps the source bytes', async (t) => {
  // Every block differs: each window's data is journaled whole, and the journal keeps it in memory for
  // the upload. It must be a copy: the window's buffer is read into again for the windows after it.
  const { r, img, journal, given } = await bigSetup(t, true, async (q) => ({ volumeId: 'v', requestId: 0, differing: q.ranges }));
  await r.start('resync', 'test');
  while (!(await r.step()));
  checkReused(t, given);
  const source = fs.readFileSync(img);
  let bytes = 0;
  for (const seq of journal.pending()) {
    const diff = await journal.load(seq, async () => {});
    t.ok(diff.extents.every((e) => !given.some((g) => g.buffer === e.data.buffer)), `differential ${seq} holds no window buffer`);
    t.ok(diff.extents.every((e) => e.data.equals(source.subarray(e.offset, e.offset + e.length))), `differential ${seq} held in memory still carries the source bytes`);
    bytes += diff.extents.reduce((n, e) => n + e.length, 0);
  }
  t.equal(bytes, BIG, 'the whole volume journaled, its part block too');
});

t.test('a reader that allocates its own buffers is given none', async (t) => {
  const { r, img, journal, given } = await bigSetup(t, false, firstBlockDiffers);
  await r.start('resync', 'test');
  while (!(await r.step()));
  t.equal(given.length, 0, 'no buffer allocated for a reader that would not use it');
  t.equal(await checkJournaled(t, img, journal), 17);
});

t.test('a verify holds no window buffers between its steps', async (t) => {
  const { r, given } = await bigSetup(t, true, firstBlockDiffers);
  await r.start('verify', 'test');
  while (!(await r.step()));
  t.equal(given.length, 0, 'each window read into memory of its own, freed with it');
  t.equal(r.state.differing.length, 17, 'every differing block reported');
});

t.test('a window whose question fails drops the windows ahead and their buffers; the pass then completes with the source bytes', async (t) => {
  let failedAfter = -1; // reads started when the question failed
  const { r, img, journal, given } = await bigSetup(t, true, async (q, hashes) => {
    // Window 5's first question fails once, while windows after it are being compared with buffers of their own.
    if (failedAfter < 0 && q.ranges[0]! * q.rangeBlocks >= 5 * (WINDOW / BS)) {
      failedAfter = given.length;
      throw new Error('the replica went away');
    }
    return firstBlockDiffers(q, hashes);
  });
  await r.start('resync', 'test');
  let threw = 0;
  for (;;) {
    try {
      if (await r.step()) break;
    } catch (e) {
      t.match((e as Error).message, /went away/);
      threw++;
    }
  }
  t.equal(threw, 1, 'one step failed');
  // Windows 0-4 were journaled and gave their buffers back; window 5 and those read after it were dropped.
  const dropped = new Set(given.slice(5, failedAfter).map((b) => b.buffer));
  t.ok(dropped.size > 0, `windows were dropped with buffers (${dropped.size})`);
  t.notOk(given.slice(failedAfter).some((b) => dropped.has(b.buffer)), 'no buffer of a dropped window is read into again');
  t.equal(await checkJournaled(t, img, journal), 17, 'every window journaled once, window 5 after its retry');
});
