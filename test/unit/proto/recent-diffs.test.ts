// RecentDiffs owns a committed differential until take() hands it over: one it does not keep (over its
// budget) or forgets untaken has its pooled bodies given back at once, each once; one it handed over is
// its taker's, and is never given back from here.
import t from 'tap';
import type { Diff } from '../../../proto/hrl.js';
import { RecentDiffs } from '../../../proto/recent-diffs.js';

/** Differential `seq` of `n` extents of `size` bytes whose releases count into `released[seq]`. */
function diff(seq: number, n: number, size: number, released: Map<number, number>): Diff {
  const extents = Array.from({ length: n }, (_, i) => ({ offset: i * size, length: size, crc32c: 0, compression: 'NONE' as const, storedLength: size, data: Buffer.alloc(size, seq), release: () => released.set(seq, (released.get(seq) ?? 0) + 1) }));
  return { header: { volumeId: 'v1', seq, startTimeMs: 0, endTimeMs: 0, volumeSize: 1 << 30, blockSize: 4096, consistency: 'CRASH', flags: 0, tags: [] }, extents, dataBytes: n * size, extentDigest: 0 };
}

t.test('over budget: not kept, and its bodies given back at once', async (t) => {
  const released = new Map<number, number>();
  const r = new RecentDiffs(3 * 65536);
  r.remember(1, diff(1, 2, 65536, released));
  r.remember(2, diff(2, 2, 65536, released)); // 4 blocks of 64 KiB: past the budget of 3
  t.same([...released], [[2, 2]], 'the one that did not fit: both extents given back');
  t.ok(r.take(1), 'the one that fits is kept');
  t.notOk(r.take(2), 'the other is not (read from its file instead)');
});

t.test('forgotten untaken: given back; taken: never given back from here', async (t) => {
  const released = new Map<number, number>();
  const r = new RecentDiffs();
  for (const s of [1, 2, 3, 4]) r.remember(s, diff(s, 3, 32768, released));
  const taken = r.take(2)!;
  r.forgetThrough(2);
  t.same([...released].sort(), [[1, 3]], 'acknowledged before being taken: given back; the taken one is not');
  r.forgetFrom(3);
  t.same([...released].sort(), [[1, 3], [3, 3], [4, 3]], 'discarded: given back, once each');
  r.forgetFrom(0);
  r.forgetThrough(10);
  t.same([...released].sort(), [[1, 3], [3, 3], [4, 3]], 'nothing twice');
  t.ok(taken.extents.every((e) => e.release), 'the taker still holds the releases of what it took');
});

t.test('a sequence remembered again replaces the older copy, which comes back; the budget stays exact', async (t) => {
  const released = new Map<number, number>();
  const r = new RecentDiffs(4 * 65536);
  r.remember(1, diff(1, 2, 65536, released));
  const again = diff(1, 2, 65536, new Map());
  r.remember(1, again);
  t.same([...released], [[1, 2]], 'the older copy given back');
  t.equal(r.take(1), again, 'the newer one is what is handed over');
  r.remember(2, diff(2, 4, 65536, released));
  t.ok(r.take(2), 'and the whole budget is free again (the first copy no longer counts)');
});
