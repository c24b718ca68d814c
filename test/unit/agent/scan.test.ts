// The scan tracker finds exactly the blocks that differ from what was last journaled, remembers that
// across restarts, and falls back to "everything" when it cannot trust its memory.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc } from '../../../common/checksum.js';
import { silentLogger } from '../../../common/log.js';
import { ScanTracker } from '../../../agent/trackers/scan.js';
import { leafHashes } from '../../../proto/range-hash.js';
import type { Collection } from '../../../agent/trackers/tracker.js';
import { Volume } from '../../../agent/volume.js';
import { Rng } from '../../seed.js';

const rng = new Rng('scan');

const BS = 4096;
const ALL = 1 << 30;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-'));
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));

/** A zero-filled image of `size` bytes, its volume, and a state dir; `open()` starts a tracker on that dir. */
async function setup(t: { teardown(fn: () => unknown): void }, size: number) {
  const dir = fs.mkdtempSync(path.join(root, 'case-'));
  const img = path.join(dir, 'disk.img');
  const state = path.join(dir, 'state');
  fs.mkdirSync(state);
  fs.writeFileSync(img, Buffer.alloc(size));
  const vol = await Volume.open(img);
  t.teardown(() => vol.close());
  /** A tracker on the state dir. With no baseline yet, one is adopted as a resync against a zero-filled replica would. */
  const open = async (opts: { lost?: boolean } = {}) => {
    const tr = new ScanTracker(state, size, BS, silentLogger());
    const why = await tr.open();
    if (why === 'no scan baseline' && !opts.lost) await tr.adoptBaseline(0, leafHashes(Buffer.alloc(size), BS));
    return tr;
  };
  /** Overwrite whole blocks with fresh random bytes. */
  const dirty = (...blocks: number[]) => {
    const fd = fs.openSync(img, 'r+');
    for (const b of blocks) fs.writeSync(fd, rng.bytes(BS), 0, BS, b * BS);
    fs.closeSync(fd);
  };
  return { img, state, vol, open, dirty };
}

/** What a collection should hold: runs of [first block, block count], data read from the image. */
function extentsOf(img: string, runs: [number, number][]) {
  const bytes = fs.readFileSync(img);
  return runs.map(([b, n]) => {
    const data = bytes.subarray(b * BS, Math.min((b + n) * BS, bytes.length));
    return { offset: b * BS, length: data.length, data: Buffer.from(data), crc32c: crc(data) };
  });
}

function got(c: Collection) {
  return c.extents.map((e) => ({ offset: e.offset, length: e.length, data: Buffer.from(e.data), crc32c: e.crc32c }));
}

t.test('fresh image: exactly the non-zero blocks, merged, then nothing once committed', async (t) => {
  const { img, vol, open, dirty } = await setup(t, 64 * BS);
  dirty(3, 4, 5, 10, 63);
  const tr = await open();
  const c1 = await tr.collect(vol, ALL);
  t.strictSame(got(c1), extentsOf(img, [[3, 3], [10, 1], [63, 1]]), 'three extents with the right data and crc32c');
  t.equal(c1.bytes, 5 * BS);
  t.equal(c1.more, false);

  t.strictSame(got(await tr.collect(vol, ALL)), extentsOf(img, [[3, 3], [10, 1], [63, 1]]), 'not committed: the same blocks again');
  await c1.commit();
  const c2 = await tr.collect(vol, ALL);
  t.strictSame(got(c2), [], 'after commit: nothing');
  t.equal(c2.bytes, 0);

  dirty(0, 4, 20);
  const c3 = await tr.collect(vol, ALL);
  t.strictSame(got(c3), extentsOf(img, [[0, 1], [4, 1], [20, 1]]), 'exactly the rewritten blocks');
  await c3.commit();

  const again = await open();
  t.strictSame(got(await again.collect(vol, ALL)), [], 'a restarted tracker finds nothing new');
  dirty(7);
  t.strictSame(got(await again.collect(vol, ALL)), extentsOf(img, [[7, 1]]), 'and still sees a new write');
});

t.test('a rewrite with identical bytes is not a change', async (t) => {
  const { img, vol, open, dirty } = await setup(t, 16 * BS);
  dirty(2);
  const tr = await open();
  await (await tr.collect(vol, ALL)).commit();
  fs.writeFileSync(img, fs.readFileSync(img));
  t.strictSame(got(await tr.collect(vol, ALL)), []);
});

t.test('a partial last block', async (t) => {
  const size = 10 * BS + 100;
  const { img, vol, open } = await setup(t, size);
  const tr = await open();
  t.strictSame(got(await tr.collect(vol, ALL)), [], 'a zero tail is not dirty');
  const fd = fs.openSync(img, 'r+');
  fs.writeSync(fd, Buffer.from('tail!'), 0, 5, 10 * BS + 50);
  fs.closeSync(fd);
  t.strictSame(got(await tr.collect(vol, ALL)), extentsOf(img, [[10, 1]]), 'the 100-byte tail block');
});

t.test('maxBytes: successive collections cover every dirty block exactly once', async (t) => {
  const blocks = 1024; // 4 MiB: several 1 MiB read chunks
  const { img, vol, open, dirty } = await setup(t, blocks * BS);
  const want = [1, 2, 255, 256, 300, 301, 302, 600, 700, 900, 1023];
  dirty(...want);
  const tr = await open();
  const seen: number[] = [];
  const bytes = fs.readFileSync(img);
  let wrongData = 0;
  let rounds = 0;
  for (let more = true; more && rounds < 20; rounds++) {
    const c = await tr.collect(vol, BS);
    if (rounds === 0) t.equal(c.more, true, 'the first collection stops early and says so');
    for (const e of c.extents) {
      if (!e.data.equals(bytes.subarray(e.offset, e.offset + e.length)) || e.crc32c !== crc(e.data)) wrongData++;
      for (let o = e.offset; o < e.offset + e.length; o += BS) seen.push(o / BS);
    }
    await c.commit();
    more = c.more;
  }
  t.ok(rounds > 1 && rounds < 20, `finished in ${rounds} collections`);
  t.strictSame([...seen].sort((a, b) => a - b), want, 'every dirty block once, nothing else');
  t.equal(wrongData, 0, 'every extent carries the image bytes and their crc32c');
  t.strictSame(got(await tr.collect(vol, ALL)), [], 'then nothing is left');
});

t.test('invalidate brings back exactly the covering blocks, across a restart', async (t) => {
  const { img, vol, open, dirty } = await setup(t, 64 * BS);
  dirty(5, 40);
  const tr = await open();
  await (await tr.collect(vol, ALL)).commit();
  await tr.invalidate([{ offset: 5 * BS + 100, length: 10 }, { offset: 30 * BS, length: 2 * BS }]);
  const want = extentsOf(img, [[5, 1], [30, 2]]);
  t.strictSame(got(await (await open()).collect(vol, ALL)), want, 'a restarted tracker remembers the invalidation');
  const c = await tr.collect(vol, ALL);
  t.strictSame(got(c), want, 'blocks 5, 30 and 31, zero or not');
  await c.commit();
  t.strictSame(got(await tr.collect(vol, ALL)), [], 'clean again once committed');
});

t.test('a damaged scan-hashes.bin makes every block dirty', async (t) => {
  for (const [what, at] of [['hash table', 4096 + 8 * 3], ['header', 2]] as const) {
    const { img, state, vol, open, dirty } = await setup(t, 64 * BS);
    dirty(9);
    await (await (await open()).collect(vol, ALL)).commit();
    const file = path.join(state, 'scan-hashes.bin');
    const buf = fs.readFileSync(file);
    buf[at]! ^= 0x40;
    fs.writeFileSync(file, buf);
    const c = await (await open()).collect(vol, ALL);
    t.strictSame(got(c), extentsOf(img, [[0, 64]]), `${what} damaged: the whole volume, zero blocks included`);
  }
});

t.test('without a baseline the tracker asks for a resync and trusts no block', async (t) => {
  const { state, vol, open } = await setup(t, 16 * BS);
  const first = await open();
  await (await first.collect(vol, 1 << 30)).commit();
  fs.rmSync(path.join(state, 'scan-hashes.bin'));
  const tr = new ScanTracker(state, 16 * BS, BS, silentLogger());
  t.equal(await tr.open(), 'no scan baseline', 'a lost baseline asks for a resync');
  const col = await tr.collect(vol, 1 << 30);
  t.equal(col.bytes, 16 * BS, 'and until one adopts a baseline, every block counts as changed, zero ones included');
});
