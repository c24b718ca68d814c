// Leaf hashes computed in one native call are exactly blockHash of each block (the values both ends of a
// resync and every saved hash table hold), for any length and block size, the short last block included.
import fc from 'fast-check';
import t from 'tap';
import { blockHash } from '../../../common/checksum.js';
import { encodeHashes, leafHashes, rangeHash, rangeHashes } from '../../../proto/range-hash.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

t.test('leafHashes equals blockHash per block', async () => {
  await fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 40_000 }), fc.constantFrom(1, 7, 512, 4096, 65536), (bytes, bs) => {
    const data = Buffer.from(bytes);
    const got = leafHashes(data, bs);
    const n = Math.ceil(data.length / bs);
    if (got.length !== n) return false;
    for (let i = 0; i < n; i++) if (got[i] !== blockHash(data.subarray(i * bs, (i + 1) * bs))) return false;
    return true;
  }), { numRuns: 200 });
});

t.test('a window of zero blocks hashes as the zero block, and its range hash follows', async (t) => {
  const zero = Buffer.alloc(4096);
  const leaves = leafHashes(Buffer.alloc(64 * 4096), 4096);
  t.ok(leaves.every((h) => h === blockHash(zero)), 'every leaf is the zero block\'s hash');
  t.equal(rangeHash(leaves, 0, 16), blockHash(Buffer.from(leaves.buffer, 0, 16 * 8)), 'a range hash is the hash of its leaves');
});

t.test('rangeHashes is rangeHash of each range, in the wire form, runs and gaps and a clipped last range alike', async () => {
  await fc.assert(fc.property(fc.integer({ min: 1, max: 700 }), fc.constantFrom(1, 16, 256), fc.integer({ min: 0, max: 3 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 64 }), (blocks, rangeBlocks, firstRange, keep) => {
    const first = firstRange * rangeBlocks;
    const leaves = leafHashes(Buffer.from(Array.from({ length: blocks * 16 }, (_, i) => (i * 31 + blocks) & 0xff)), 16);
    const all = Array.from({ length: Math.ceil(blocks / rangeBlocks) }, (_, i) => firstRange + i);
    const ranges = all.filter((_, i) => keep[i % keep.length]);
    return rangeHashes(leaves, ranges, rangeBlocks, first).equals(encodeHashes(ranges.map((r) => rangeHash(leaves, r, rangeBlocks, first))));
  }), { numRuns: 300 });
});
