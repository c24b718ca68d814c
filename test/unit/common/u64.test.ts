// u64 fields as numbers (common/u64.ts): the same bytes as Buffer's BigInt methods, for every safe integer size.
import t from 'tap';
import { readU64, writeU64 } from '../../../common/u64.js';

t.test('writeU64 / readU64 match writeBigUInt64LE / readBigUInt64LE', async (t) => {
  for (const v of [0, 1, 4096, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 5 * 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER]) {
    const ours = Buffer.alloc(12, 0xee);
    const ref = Buffer.alloc(12, 0xee);
    writeU64(ours, v, 2);
    ref.writeBigUInt64LE(BigInt(v), 2);
    t.same(ours, ref, `bytes of ${v}`);
    t.equal(readU64(ref, 2), v, `read back ${v}`);
  }
});

t.test('writeU64 refuses what is not a non-negative safe integer, as BigInt did', async (t) => {
  for (const v of [1.5, -1, 2 ** 53, NaN, Infinity]) t.throws(() => writeU64(Buffer.alloc(8), v, 0), RangeError, `${v}`);
});
