// crc32c combination: crc(A ‖ B) from crc(A), crc(B) and |B| equals a direct crc32c of the concatenation,
// for random contents and lengths (0 included), so checksums derived from it verify what a reader computes.
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { crc } from '../../../common/checksum.js';
import { crc32cCombine } from '../../../common/crc-combine.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

t.test('known value: crc32c("123456789") = 0xe3069283, combined from any split', async (t) => {
  const s = Buffer.from('123456789');
  t.equal(crc(s), 0xe3069283, 'the reference check value');
  for (let i = 0; i <= s.length; i++) t.equal(crc32cCombine(crc(s.subarray(0, i)), crc(s.subarray(i)), s.length - i), 0xe3069283, `split at ${i}`);
});

t.test('property: two parts of random lengths (0 included) combine to the crc of their concatenation', async (t) => {
  const part = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 70_000 })).chain((n) => fc.uint8Array({ minLength: n, maxLength: n }));
  await t.resolves(fc.assert(fc.asyncProperty(part, part, async (a, b) => {
    const whole = crc(Buffer.concat([a, b]));
    assert.equal(crc32cCombine(crc(a), crc(b), b.length), whole, `|A| ${a.length}, |B| ${b.length}`);
  }), { numRuns: 300 }));
});

t.test('property: many parts folded left give the crc of the whole, as a file writer folds extents', async (t) => {
  const parts = fc.array(fc.integer({ min: 0, max: 9000 }).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })), { maxLength: 40 });
  await t.resolves(fc.assert(fc.asyncProperty(parts, async (ps) => {
    let folded = 0;
    for (const p of ps) folded = crc32cCombine(folded, crc(p), p.length);
    assert.equal(folded, crc(Buffer.concat(ps)));
  }), { numRuns: 100 }));
});

t.test('a changed byte in the second part changes the combined crc as it changes the direct one', async (t) => {
  const a = Buffer.alloc(4096, 1);
  const b = Buffer.alloc(4096, 2);
  const good = crc32cCombine(crc(a), crc(b), b.length);
  b[100] = 3;
  t.not(crc32cCombine(crc(a), crc(b), b.length), good);
  t.equal(crc32cCombine(crc(a), crc(b), b.length), crc(Buffer.concat([a, b])));
});

t.test('lengths past 2^32 bytes: folding the zero-length operator agrees with doubling', async (t) => {
  // x^(8·2L) applied once equals x^(8·L) applied twice: check via crc of zeros, combined in halves.
  const z = crc(Buffer.alloc(1 << 16));
  const twice = crc32cCombine(z, z, 1 << 16);
  t.equal(twice, crc(Buffer.alloc(1 << 17)));
  // With crcB = 0 the combination is the pure shift by x^(8·len); a shift past 2^32 bytes must equal
  // the same shift done in two steps (the length's high bits are not lost to 32-bit arithmetic).
  const big = 2 ** 33 + 5;
  t.equal(crc32cCombine(0x12345678, 0, big), crc32cCombine(crc32cCombine(0x12345678, 0, 2 ** 33), 0, 5));
  t.not(crc32cCombine(0x12345678, 0, big), crc32cCombine(0x12345678, 0, 5), 'the high bits count');
});
