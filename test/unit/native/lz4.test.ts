// The native LZ4 (native/lz4.ts): the stored form is the one lz4-napi wrote before (old caches and
// journals still decode, and lz4-napi reads ours), the keep limit is exact, scratch reuse never leaks one
// extent's bytes into another's, and malformed blocks are refused rather than decoded past their length.
import fc from 'fast-check';
import { compressSync, uncompressSync } from 'lz4-napi';
import t from 'tap';
import { lz4Bound, lz4Compress, lz4CompressAsync, lz4Decompress, lz4DecompressAsync, lz4Native, lz4Version, portable } from '../../../native/lz4.js';
import { Rng, seedFastCheck } from '../../seed.js';

seedFastCheck();
const rng = new Rng('native-lz4');

const text = Buffer.from(Array.from({ length: 4000 }, (_, i) => `2024-05-01T12:00:${String(i % 60).padStart(2, '0')} write block ${i * 7} ok\n`).join(''));

const data = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 70_000 }).map((a) => Buffer.from(a)),
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.integer({ min: 1, max: 5000 })).map(([p, n]) => Buffer.concat(Array.from({ length: n }, () => Buffer.from(p)))),
  fc.integer({ min: 0, max: text.length }).map((n) => text.subarray(0, n)),
);

t.test('the library is lz4 1.9 or later (the system\'s liblz4)', async (t) => {
  // Without liblz4-dev/libxxhash-dev at build time the portable path stands in; CI installs them.
  if (!lz4Native() && process.env.TIDEMARK_REQUIRE_PRIVILEGED !== '1') { t.comment(`tidemark_bytes not built: ${lz4Version()}`); return; }
  t.ok(lz4Native(), 'the native addon is in use');
  const [major, minor] = lz4Version().split('.').map(Number) as [number, number];
  t.ok(major > 1 || (major === 1 && minor >= 9), `lz4 ${lz4Version()}`);
});

t.test('stored form: u32 LE length + block, readable by lz4-napi both ways, sync and on the pool', async () => {
  await fc.assert(fc.asyncProperty(data, async (raw) => {
    const mine = lz4Compress(raw, lz4Bound(raw.length));
    const pooled = await lz4CompressAsync(raw, lz4Bound(raw.length));
    if (mine === null || pooled === null || !mine.equals(pooled)) return false;
    if (mine.readUInt32LE(0) !== raw.length) return false;
    if (!uncompressSync(mine).equals(raw)) return false;
    const theirs = compressSync(raw);
    if (!lz4Decompress(theirs.subarray(4), raw.length).equals(raw)) return false;
    return (await lz4DecompressAsync(mine.subarray(4), raw.length)).equals(raw);
  }), { numRuns: 120 });
});

t.test('limit: a stored form longer than the limit is null, one within it is exact', async (t) => {
  const full = lz4Compress(text, lz4Bound(text.length))!;
  t.ok(full.length < text.length / 2, `text compresses (${full.length} of ${text.length})`);
  t.ok(lz4Compress(text, full.length)!.equals(full), 'limit = its length: kept');
  t.equal(lz4Compress(text, full.length - 1), null, 'one byte short: abandoned');
  const noise = rng.bytes(256 * 1024);
  t.equal(lz4Compress(noise, Math.ceil(noise.length * 0.95) - 1), null, 'random bytes never get under 95%');
  t.equal(await lz4CompressAsync(noise, Math.ceil(noise.length * 0.95) - 1), null, 'on the pool too');
  t.equal(lz4Compress(Buffer.alloc(1), 0), null, 'a limit under the prefix: null');
});

t.test('reused scratch: results of interleaved pooled calls are each their own', async (t) => {
  const inputs = Array.from({ length: 24 }, (_, i) => Buffer.concat([text.subarray(i * 100), rng.bytes(i * 500)]));
  const outs = await Promise.all(inputs.map((r) => lz4CompressAsync(r, lz4Bound(r.length))));
  const small = inputs.map((r) => lz4Compress(r, lz4Bound(r.length)));
  for (let i = 0; i < inputs.length; i++) {
    t.ok(outs[i] && lz4Decompress(outs[i]!.subarray(4), inputs[i]!.length).equals(inputs[i]!), `pooled ${i} decodes to its input`);
    t.ok(small[i]!.equals(outs[i]!), `inline ${i} is the same bytes`);
  }
});

t.test('malformed or mislabelled blocks are refused with LZ4_MALFORMED', async (t) => {
  const packed = lz4Compress(text, lz4Bound(text.length))!;
  const block = packed.subarray(4);
  t.throws(() => lz4Decompress(block, text.length - 1), { code: 'LZ4_MALFORMED' }, 'decodes to more than recorded');
  t.throws(() => lz4Decompress(block, text.length + 1), { code: 'LZ4_MALFORMED' }, 'decodes to less than recorded');
  t.throws(() => lz4Decompress(block.subarray(0, block.length - 7), text.length), { code: 'LZ4_MALFORMED' }, 'cut short');
  await t.rejects(lz4DecompressAsync(block, text.length - 1), { code: 'LZ4_MALFORMED' }, 'on the pool too');
  const bomb = Buffer.from([0xf0, 0xff, 0xff, 0xff, 0xff, 0x00]);
  t.throws(() => lz4Decompress(bomb, 4096), { code: 'LZ4_MALFORMED' }, 'a literal run claiming more than the input');
});

t.test('the portable path (no liblz4-dev at build) stores and reads the same forms', async (t) => {
  await fc.assert(fc.asyncProperty(data, async (raw) => {
    const dst = Buffer.alloc(portable.bound(raw.length));
    const n = await portable.compressAsync(raw, dst, 0, dst.length);
    if (n !== portable.compress(raw, Buffer.alloc(dst.length), 0, dst.length)) return false;
    const stored = dst.subarray(0, n);
    if (!uncompressSync(stored).equals(raw)) return false;
    const back = Buffer.alloc(raw.length);
    const theirs = compressSync(raw);
    return portable.decompress(theirs.subarray(4), back) === raw.length && back.equals(raw);
  }), { numRuns: 60 });
  t.equal(portable.compress(Buffer.alloc(4096, 7), Buffer.alloc(8192), 0, 10), 0, 'over the limit: nothing stored');
  t.throws(() => portable.decompress(Buffer.from([0xff, 0xff, 0xff]), Buffer.alloc(100)), { code: 'LZ4_MALFORMED' }, 'a malformed block is named');
  const block = Buffer.alloc(3 * 4096 + 100, 3);
  const a = new BigUint64Array(4);
  portable.leafHashes(block, 4096, a);
  if (lz4Native()) {
    const { leafHashesNative } = await import('../../../native/lz4.js');
    t.same(Array.from(a), Array.from(leafHashesNative(block, 4096)), 'leaf hashes equal the native ones');
  }
});
