// The SSE4.2 crc32c (native/src/crc32c.c) gives @node-rs/crc32's values for every length, alignment and
// seed: across the three-lane threshold, on views into larger buffers, and continued from a seed (the
// way frames and files chain their crcs). common/checksum.ts uses it wherever it loads.
import { crc32c } from '@node-rs/crc32';
import fc from 'fast-check';
import t from 'tap';
import { crc, crcImplementation } from '../../../common/checksum.js';
import { nativeCrc32c } from '../../../native/crc32c.js';
import { Rng, seedFastCheck } from '../../seed.js';

seedFastCheck();
const rng = new Rng('native-crc32c');
const reference = (d: Uint8Array, seed: number): number => crc32c(d as Buffer, seed) >>> 0;
const native = nativeCrc32c();

t.test('the native crc32c is the one in use where the CPU has SSE4.2', async (t) => {
  if (!native) {
    if (process.env.TIDEMARK_REQUIRE_PRIVILEGED === '1' && process.arch === 'x64') t.fail('tidemark_bytes has no crc32c on this x64 machine');
    else t.comment('no native crc32c here: @node-rs/crc32 in use');
    return;
  }
  t.equal(crcImplementation, process.env.TIDEMARK_CRC32C === 'portable' ? '@node-rs/crc32' : 'sse4.2');
  t.equal(native(Buffer.from('123456789'), 0), 0xe3069283, 'the check value of crc32c');
});

t.test('same values as @node-rs/crc32: any length, offset and seed', async (t) => {
  if (!native) return;
  // Lengths around the three-lane threshold (8 KiB) and its 8-byte lane rounding, and large ones.
  const lengths = [0, 1, 7, 8, 9, 63, 4096, 8183, 8191, 8192, 8193, 8200, 24_575, 24_576, 24_577, 65_537, 1 << 20, (1 << 20) + 13, 4 << 20];
  const big = rng.bytes((4 << 20) + 64);
  for (const n of lengths) {
    for (const off of [0, 1, 3, 7]) {
      const view = big.subarray(off, off + n);
      const seed = rng.int(0, 2 ** 32 - 1);
      t.equal(native(view, 0), reference(view, 0), `length ${n} at offset ${off}`);
      t.equal(native(view, seed), reference(view, seed), `length ${n} at offset ${off}, seeded`);
    }
  }
  await fc.assert(fc.property(fc.uint8Array({ maxLength: 40_000 }), fc.nat({ max: 0xffffffff }), (a, seed) => native(a, seed) === reference(a, seed)), { numRuns: 300 });
});

t.test('chaining: crc of a whole equals the crc of its second part seeded with the first', async (t) => {
  const data = rng.bytes(100_000);
  for (const cut of [0, 1, 8192, 50_001, 100_000]) t.equal(crc(data.subarray(cut), crc(data.subarray(0, cut))), reference(data, 0), `cut at ${cut}`);
});

t.test('a view of another typed array is refused, not read as its elements', async (t) => {
  if (!native) return;
  t.throws(() => native(new Uint32Array(4) as unknown as Uint8Array, 0), TypeError);
});
