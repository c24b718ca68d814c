// The extent buffer pool (common/buffer-pool.ts): reuse by size class, only of its own buffers, once
// per give, within its byte bound.
import t from 'tap';
import { BufferPool, capacityFor, POOL_CAP, POOL_FROM } from '../../../common/buffer-pool.js';

t.test('size classes: 4 KiB steps under 256 KiB, 64 KiB above', async (t) => {
  t.equal(capacityFor(65536 + 40), 69632);
  t.equal(capacityFor(256 * 1024), 256 * 1024);
  t.equal(capacityFor(600 * 1024 + 1), 640 * 1024);
  t.equal(capacityFor(1024 * 1024 + 30), 1024 * 1024 + 65536);
});

t.test('a given buffer serves the next take of its class, once', async (t) => {
  const pool = new BufferPool();
  const a = pool.take(65536 + 40);
  t.equal(a.length, 65536 + 40);
  t.equal(a.buffer.byteLength, 69632);
  a.fill(7);
  pool.give(a);
  pool.give(a); // twice: pooled once
  const b = pool.take(65536 + 60);
  t.equal(b.buffer, a.buffer, 'same class: reused');
  const c = pool.take(65536 + 60);
  t.not(c.buffer, a.buffer, 'given once, handed out once');
  pool.give(c);
  t.not(pool.take(40 * 1024).buffer, c.buffer, 'a class more than a quarter smaller: not served by it');
  t.equal(pool.take(60 * 1024).buffer, c.buffer, 'one at most a quarter smaller: served by it');
  t.same(pool.stats, { made: 3, reused: 2, given: 2, dropped: 0 });
});

t.test('buffers the pool did not make are never taken in', async (t) => {
  const pool = new BufferPool();
  const small = Buffer.allocUnsafe(100); // a slice of Node's shared pool
  const foreign = Buffer.allocUnsafeSlow(69632);
  pool.give(small);
  pool.give(foreign);
  t.same(pool.stats.given, 0);
  t.not(pool.take(65536 + 40).buffer, foreign.buffer, 'a take makes its own');
  t.equal(pool.take(100).length, 100, 'below POOL_FROM: an ordinary buffer');
  t.notOk(pool.pools(POOL_FROM - 1) || pool.pools(POOL_CAP + 1), 'outside the bounds: not pooled');
  t.ok(pool.pools(POOL_FROM) && pool.pools(POOL_CAP));
});

t.test('free buffers past the bound are left to the collector', async (t) => {
  const pool = new BufferPool(2 * 69632);
  const bufs = [0, 1, 2].map(() => pool.take(65536));
  for (const b of bufs) pool.give(b);
  t.same({ given: pool.stats.given, dropped: pool.stats.dropped }, { given: 3, dropped: 1 });
  const again = [0, 1, 2].map(() => pool.take(65536));
  t.equal(pool.stats.reused, 2, 'two kept, the third made anew');
  t.equal(new Set(again.map((b) => b.buffer)).size, 3);
});

t.test('an idle pool lets its free buffers go; a busy one keeps them', async (t) => {
  const pool = new BufferPool(64 * 1024 * 1024, 0); // trimmed by hand here
  const a = pool.take(65536);
  pool.give(a);
  pool.trimIdle(); // a take since the last trim: busy
  const b = pool.take(65536);
  t.equal(b.buffer, a.buffer, 'kept while takes go on');
  pool.give(b);
  pool.trimIdle(); // the take above counts for this period
  pool.trimIdle(); // nothing taken since: idle
  const c = pool.take(65536);
  t.not(c.buffer, a.buffer, 'let go once idle: the next take is a fresh buffer');
  t.same(pool.stats, { made: 2, reused: 1, given: 2, dropped: 0 });
});
