// Replica.writeMany / readMany (native writeMany/readMany): many scattered extents in one call, in order.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Replica } from '../../../master-target/replica.js';
import { isTidemarkError } from '../../../common/errors.js';

const SIZE = 4 << 20;

async function setup(t: Test): Promise<{ file: string; replica: Replica }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-scatter-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'replica.img');
  const replica = await Replica.createSparse(file, SIZE);
  t.teardown(() => replica.close());
  return { file, replica };
}

t.test('writeMany writes every range in order: a later one over an earlier one wins, neighbours coalesce', async (t) => {
  const { file, replica } = await setup(t);
  const expected = Buffer.alloc(SIZE);
  const offsets: number[] = [];
  const data: Buffer[] = [];
  const put = (offset: number, b: Buffer): void => {
    offsets.push(offset);
    data.push(b);
    b.copy(expected, offset);
  };
  // 3000 neighbouring 512-byte ranges (more than one pwritev's 1024 vectors), scattered blocks, overlaps.
  for (let i = 0; i < 3000; i++) put(i * 512, randomBytes(512));
  for (let i = 0; i < 200; i++) put((Math.floor(Math.random() * (SIZE / 4096 - 4)) * 4096), randomBytes(4096 * (1 + (i % 3))));
  put(4096, randomBytes(8192)); // over ranges written above: must land last
  put(4096 + 100, randomBytes(10)); // and this over it
  put(SIZE - 4096, Buffer.alloc(0)); // empty: nothing
  await replica.writeMany(offsets, data);
  await replica.sync();
  t.ok((await fsp.readFile(file)).equals(expected), 'the file holds every range, the later over the earlier');
});

t.test('readMany reads scattered and neighbouring ranges back to back; past the end fails clearly', async (t) => {
  const { file, replica } = await setup(t);
  const content = randomBytes(SIZE);
  await fsp.writeFile(file, content);
  const ranges = [{ offset: 8192, length: 4096 }, { offset: 12288, length: 4096 }, { offset: 0, length: 100 }, { offset: SIZE - 4096, length: 4096 }, { offset: 5000, length: 0 }];
  const got = await replica.readMany(ranges);
  t.equal(got.length, ranges.length);
  ranges.forEach((r, i) => t.ok(got[i]!.equals(content.subarray(r.offset, r.offset + r.length)), `range ${i} read`));
  const err = await replica.readMany([{ offset: SIZE - 10, length: 20 }]).then(() => null, (e: unknown) => e);
  t.ok(isTidemarkError(err) && err.code === 'TM_ERR_NATIVE' && /past the end/.test(err.message), 'a range past the end is an error, not a short read');
});
