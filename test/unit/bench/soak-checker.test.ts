// The soak's checker must catch what it is there to catch: an image missing a write that completed
// before its newest one, a block holding a write that never touched it, a flipped bit. A checker that
// passes everything would make the soak worthless.
import t from 'tap';
import { checkExact, checkPrefix } from '../../../bench/soak/check-image.js';
import { Replay } from '../../../bench/soak/history.js';
import { Rng } from '../../../bench/soak/rng.js';
import { BLOCK, readStamp, stampBlock } from '../../../bench/soak/stamp.js';
import type { Write } from '../../../bench/soak/writer.js';

const BLOCKS = 64;

/** A random history of `n` writes and the image after the first `upTo` of them (plus part of the next). */
function history(n: number, seed: number): Write[] {
  const rng = new Rng(seed);
  const out: Write[] = [];
  for (let seq = 1; seq <= n; seq++) {
    const blocks = rng.int(1, 9);
    out.push({ seq, block: rng.int(0, BLOCKS - blocks + 1), blocks, issuedMs: seq * 10, doneMs: seq * 10 + 1 });
  }
  return out;
}

function image(h: readonly Write[], upTo: number, partOfNext = 0): Buffer {
  const img = Buffer.alloc(BLOCKS * BLOCK);
  const apply = (w: Write, count: number): void => {
    for (let i = 0; i < count; i++) stampBlock(img.subarray((w.block + i) * BLOCK, (w.block + i + 1) * BLOCK), w.seq, w.issuedMs, w.block + i);
  };
  for (const w of h.slice(0, upTo)) apply(w, w.blocks);
  const next = h[upTo];
  if (next && partOfNext > 0) apply(next, Math.min(partOfNext, next.blocks));
  return img;
}

t.test('a stamp reads back, and any changed byte is damage', async (t) => {
  const b = Buffer.alloc(BLOCK);
  stampBlock(b, 42, 1234.5, 7);
  t.same(readStamp(b, 7), { kind: 'stamp', seq: 42, atMs: 1234.5 });
  t.equal(readStamp(b, 8).kind, 'damaged', 'a stamp in the wrong block');
  b[3000]! ^= 1;
  t.equal(readStamp(b, 7).kind, 'damaged', 'one bit flipped in the filler');
  t.same(readStamp(Buffer.alloc(BLOCK), 0), { kind: 'zero' });
});

t.test('every prefix of the history passes, torn last write included', async (t) => {
  const h = history(200, 1);
  const replay = new Replay(h, BLOCKS);
  for (let k = 0; k <= 200; k += 7) {
    const v = checkPrefix(image(h, k, 2), replay);
    t.equal(v.badBlocks, 0, `prefix of ${k} writes plus part of the next: ${v.examples.join('; ')}`);
  }
});

t.test('a write missing below the newest, or a block rolled back, breaks prefix closure', async (t) => {
  const h = history(200, 2);
  const img = image(h, 150);
  // A write from the middle that is still the last one of some block at #150: take it out there,
  // putting back what those blocks held before it (as if the write never reached the replica).
  const visible = (w: Write): number[] => {
    const out: number[] = [];
    for (let b = w.block; b < w.block + w.blocks; b++) {
      const s = readStamp(img.subarray(b * BLOCK, (b + 1) * BLOCK), b);
      if (s.kind === 'stamp' && s.seq === w.seq) out.push(b);
    }
    return out;
  };
  const w = h.slice(90, 140).find((x) => visible(x).length > 0)!;
  t.ok(w, `write #${w.seq} is still visible at #150`);
  const before = image(h, w.seq - 1);
  const hole = Buffer.from(img);
  for (const b of visible(w)) before.copy(hole, b * BLOCK, b * BLOCK, (b + 1) * BLOCK);
  const v = checkPrefix(hole, new Replay(h, BLOCKS));
  t.equal(v.badBlocks, visible(w).length, `the missing write is found: ${v.examples.join('; ')}`);
  t.equal(checkPrefix(img, new Replay(h, BLOCKS)).badBlocks, 0, 'the untouched prefix passes');
  const flipped = Buffer.from(img);
  flipped[5 * BLOCK + 100]! ^= 4;
  t.ok(checkPrefix(flipped, new Replay(h, BLOCKS)).badBlocks >= 1, 'a flipped bit is found');
  const final = new Replay(h, BLOCKS);
  final.advanceAll();
  t.equal(checkExact(image(h, 200), final).badBlocks, 0, 'the full history matches exactly');
  t.ok(checkExact(image(h, 199), final).badBlocks >= 1, 'an image one write short does not');
});
