// A differential read back from its file (proto/hrl-read.ts) owns its data: the read buffer is reused for
// the next file, so nothing read earlier may change when later files are read, whatever their sizes.
// Large extents come from the extent pool and go back through their release; damage is still reported.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { extentPool } from '../../../common/buffer-pool.js';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import { HrlWriter, hrlName, readHrl, type Diff } from '../../../proto/hrl.js';
import { Rng } from '../../seed.js';

const rng = new Rng('hrl-read');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-hrl-read-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Differential `seq` of random extents of these sizes; returns its file and the data written. */
async function written(seq: number, sizes: number[]): Promise<{ file: string; data: Buffer[] }> {
  const w = await HrlWriter.create(dir, { volumeId: 'v1', seq, startTimeMs: seq, endTimeMs: seq, volumeSize: 1 << 30, blockSize: 4096, consistency: 'CRASH', flags: 0, tags: [] });
  const data = sizes.map((n) => rng.bytes(n));
  let offset = 0;
  for (const d of data) {
    await w.append({ offset, length: d.length, crc32c: crc(d), compression: 'NONE', storedLength: d.length }, d);
    offset += Math.ceil(d.length / 4096) * 4096;
  }
  await w.commit();
  return { file: path.join(dir, hrlName(seq)), data };
}

const same = (d: Diff, data: Buffer[]): boolean => d.extents.length === data.length && d.extents.every((e, i) => e.data.equals(data[i]!) && crc(e.data) === e.crc32c);

t.test('what was read stays as read while other files are read through the same buffers', async (t) => {
  // Mixed sizes: 4 KiB ones (packed into slabs) and 64 KiB-1 MiB ones (pooled); files of several sizes.
  const files = [
    await written(1, [4096, 65536, 4096, 1 << 20, 8192]),
    await written(2, Array.from({ length: 40 }, () => 4096)),
    await written(3, [1 << 20, 1 << 20, 1 << 20, 300 * 1024]),
    await written(4, [4096]),
  ];
  const read: Diff[] = [];
  for (const f of files) read.push(await readHrl(f.file));
  // And concurrently: two reads at once take two buffers.
  const [a, b] = await Promise.all([readHrl(files[2]!.file), readHrl(files[0]!.file)]);
  read.push(a, b);
  const expected = [...files.map((f) => f.data), files[2]!.data, files[0]!.data];
  t.ok(read.every((d, i) => same(d, expected[i]!)), 'every differential read holds exactly its own bytes');
  const large = read.flatMap((d) => d.extents.filter((e) => e.data.length >= 65536));
  t.equal(new Set(large.map((e) => e.data.buffer)).size, large.length, 'each large extent has a buffer of its own');
});

t.test('large extents go back to the pool through release, once; small ones have none', async (t) => {
  const f = await written(5, [4096, 128 * 1024, 12 * 1024, 512 * 1024]);
  const d = await readHrl(f.file);
  t.same(d.extents.map((e) => typeof e.release), ['undefined', 'function', 'undefined', 'function'], 'pooled sizes carry a release');
  const given = extentPool.stats.given;
  for (const e of d.extents) e.release?.();
  for (const e of d.extents) e.release?.();
  t.equal(extentPool.stats.given - given, 2, 'each pooled body is taken back once, a second release is ignored');
  const again = await readHrl(f.file);
  t.ok(same(again, f.data), 'and a later read (reusing them) is exact');
  const before = extentPool.stats.given;
  for (const e of d.extents) e.release?.();
  t.equal(extentPool.stats.given, before, 'a stale release, after the pool handed the buffer out again, gives nothing');
  t.ok(same(again, f.data), 'so the new holder keeps its bytes');
});

t.test('a damaged file is refused as before, and the buffer serves the next read', async (t) => {
  const f = await written(6, [65536, 4096]);
  const bytes = fs.readFileSync(f.file);
  bytes[bytes.length - 100]! ^= 0xff;
  const bad = path.join(dir, 'damaged.hrl');
  fs.writeFileSync(bad, bytes);
  const err = await readHrl(bad).then(() => null, (e: unknown) => e);
  t.ok(err instanceof TidemarkError && err.code === 'TM_ERR_HRL_CORRUPT', `refused: ${String((err as Error)?.message)}`);
  const missing = await readHrl(path.join(dir, 'none.hrl')).then(() => null, (e: unknown) => e);
  t.match((missing as Error)?.message, /read journal file .*none\.hrl/, 'a missing file is a read failure naming it');
  t.ok(same(await readHrl(f.file), f.data), 'the next read is exact');
});
