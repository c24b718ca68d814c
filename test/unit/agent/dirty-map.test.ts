// The dirty map: one bit per block, saved as runs with the tracker's metadata. It must count and list
// exactly the blocks marked, survive a save and load unchanged, and refuse a damaged file or one made for
// another volume rather than guess.
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import { DirtyMap } from '../../../agent/trackers/dirty-map.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

const BS = 4096;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-'));
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(root, `dirty-map-${n++}.bin`);

/** The code of what `p` rejects with (or a note when it resolves or throws something else). */
async function rejectedCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return e instanceof TidemarkError ? e.code : `not a TidemarkError: ${String(e)}`;
  }
  return 'resolved';
}

const setBlocks = (m: DirtyMap): number[] => Array.from({ length: m.blockCount }, (_, b) => b).filter((b) => m.has(b));

t.test('set, clear, count, has', async (t) => {
  const m = new DirtyMap(100);
  t.equal(m.count, 0);
  t.strictSame([...m.runs()], [], 'a new map has no runs');
  m.set(3, 7);
  t.equal(m.count, 4);
  t.strictSame(setBlocks(m), [3, 4, 5, 6], '[first, end): end excluded');
  m.set(5, 10);
  t.equal(m.count, 7, 'overlap counted once');
  m.set(5, 10);
  t.equal(m.count, 7, 'setting again changes nothing');
  m.clear(4, 6);
  t.strictSame(setBlocks(m), [3, 6, 7, 8, 9]);
  t.equal(m.count, 5);
  m.clear(0, 4);
  m.clear(0, 4);
  t.equal(m.count, 4, 'clearing clean blocks changes nothing');
  m.set(7, 7);
  m.set(9, 8);
  t.equal(m.count, 4, 'an empty or reversed range is nothing');
  m.set(-5, 2);
  t.strictSame(setBlocks(m).slice(0, 2), [0, 1], 'clipped at 0');
  m.set(98, 200);
  t.ok(m.has(98) && m.has(99), 'clipped at the end');
  t.equal(m.count, 8, '0, 1, 6..9, 98, 99');
  m.set(31, 33);
  t.ok(m.has(31) && m.has(32), 'bit 31 and the next word');
  m.clear(0, Number.MAX_SAFE_INTEGER);
  t.equal(m.count, 0);
  t.strictSame(setBlocks(m), []);
});

t.test('runs: in order, merged across words, split at maxRun', async (t) => {
  const m = new DirtyMap(200);
  m.set(30, 70);
  m.set(100, 101);
  m.set(190, 200);
  t.strictSame([...m.runs()], [[30, 70], [100, 101], [190, 200]], 'one run across word boundaries; the last block included');
  t.strictSame([...m.runs(16)], [[30, 46], [46, 62], [62, 70], [100, 101], [190, 200]], 'split into runs of at most 16');
  t.strictSame([...m.runs(1)].length, 51, 'maxRun 1: one run per block');
  const odd = new DirtyMap(33);
  odd.set(0, 33);
  t.strictSame([...odd.runs()], [[0, 33]], 'a block count that is not a multiple of 32');
  t.strictSame([...odd.runs(32)], [[0, 32], [32, 33]]);
  t.strictSame([...new DirtyMap(0).runs()], [], 'an empty volume');
});

t.test('save and load round-trip, with the metadata', async (t) => {
  const file = fresh();
  const size = 1000 * BS + 512; // last block short
  const m = new DirtyMap(Math.ceil(size / BS));
  m.set(0, 1);
  m.set(31, 65);
  m.set(999, 1001);
  const meta = { instance: 'tidemark.vol-1.0a1b2c3d', bootId: 'b6f3', cpus: { 0: { read: 12, overrun: 0, dropped: 0 } }, note: 'ünïcödé ✓' };
  await m.save(file, BS, size, meta);
  const loaded = await DirtyMap.load(file, BS, size);
  t.ok(loaded);
  t.strictSame(loaded!.meta, meta, 'metadata as saved (multi-byte UTF-8 included)');
  t.equal(loaded!.map.blockCount, 1001);
  t.equal(loaded!.map.count, m.count);
  t.strictSame([...loaded!.map.runs()], [[0, 1], [31, 65], [999, 1001]]);

  const empty = fresh();
  await new DirtyMap(10).save(empty, BS, 10 * BS, {});
  const e = await DirtyMap.load(empty, BS, 10 * BS);
  t.equal(e?.map.count, 0, 'a clean map');
  t.strictSame(e?.meta, {});
  t.equal(fs.statSync(empty).size, 40 + 2, 'header and "{}" only');

  t.equal(await DirtyMap.load(path.join(root, 'none.bin'), BS, size), null, 'no file: null');
});

t.test('the file is laid out as docs/FORMAT.md says', async (t) => {
  const file = fresh();
  const m = new DirtyMap(64);
  m.set(2, 5);
  m.set(40, 41);
  const meta = { a: 1 };
  await m.save(file, 512, 64 * 512, meta);
  const buf = fs.readFileSync(file);
  const metaLen = Buffer.byteLength(JSON.stringify(meta));
  t.equal(buf.length, 40 + metaLen + 2 * 16);
  t.equal(buf.toString('latin1', 0, 4), 'TMDM', 'magic');
  t.equal(buf.readUInt16LE(4), 1, 'version');
  t.equal(buf.readUInt32LE(8), 512, 'block size');
  t.equal(buf.readUInt32LE(12), metaLen, 'meta length');
  t.equal(Number(buf.readBigUInt64LE(16)), 64 * 512, 'volume size');
  t.equal(buf.readUInt32LE(24), 2, 'run count');
  t.equal(buf.readUInt32LE(28), crc(buf.subarray(40)), 'body crc');
  t.equal(buf.readUInt32LE(32), crc(buf.subarray(0, 32)), 'header crc');
  t.equal(buf.toString('utf8', 40, 40 + metaLen), '{"a":1}');
  const runs = buf.subarray(40 + metaLen);
  t.strictSame([0, 1].map((i) => [Number(runs.readBigUInt64LE(i * 16)), Number(runs.readBigUInt64LE(i * 16 + 8))]), [[2, 3], [40, 1]], 'first block and block count');
});

t.test('a damaged file is TM_ERR_STATE_CORRUPT', async (t) => {
  const size = 256 * BS;
  const good = fresh();
  const m = new DirtyMap(256);
  m.set(10, 20);
  m.set(100, 130);
  await m.save(good, BS, size, { instance: 'x' });
  const bytes = fs.readFileSync(good);
  const damaged = async (buf: Buffer): Promise<string> => {
    const f = fresh();
    fs.writeFileSync(f, buf);
    return rejectedCode(DirtyMap.load(f, BS, size));
  };
  const flip = (at: number): Buffer => {
    const b = Buffer.from(bytes);
    b[at]! ^= 0x40;
    return b;
  };
  for (const at of [0, 4, 8, 12, 16, 24, 28, 31]) t.equal(await damaged(flip(at)), 'TM_ERR_STATE_CORRUPT', `header byte ${at} flipped`);
  t.equal(await damaged(bytes.subarray(0, 39)), 'TM_ERR_STATE_CORRUPT', 'shorter than a header');
  t.equal(await damaged(Buffer.alloc(0)), 'TM_ERR_STATE_CORRUPT', 'empty file');
  t.equal(await damaged(flip(41)), 'TM_ERR_STATE_CORRUPT', 'meta byte flipped');
  t.equal(await damaged(flip(bytes.length - 1)), 'TM_ERR_STATE_CORRUPT', 'run byte flipped');
  t.equal(await damaged(bytes.subarray(0, bytes.length - 16)), 'TM_ERR_STATE_CORRUPT', 'last run cut off');
  t.equal(await damaged(Buffer.concat([bytes, Buffer.alloc(16)])), 'TM_ERR_STATE_CORRUPT', 'bytes appended');

  // A newer version, with a header crc that verifies: refused, not parsed as version 1.
  const newer = Buffer.from(bytes);
  newer.writeUInt16LE(2, 4);
  newer.writeUInt32LE(crc(newer.subarray(0, 32)), 32);
  t.equal(await damaged(newer), 'TM_ERR_STATE_CORRUPT', 'version 2');
  const f = fresh();
  fs.writeFileSync(f, newer);
  await t.rejects(DirtyMap.load(f, BS, size), { message: /newer format version/ });
});

t.test('a map of another geometry is TM_ERR_VOLUME_GEOMETRY', async (t) => {
  const file = fresh();
  await new DirtyMap(256).save(file, BS, 256 * BS, {});
  t.equal(await rejectedCode(DirtyMap.load(file, 512, 256 * BS)), 'TM_ERR_VOLUME_GEOMETRY', 'other block size');
  t.equal(await rejectedCode(DirtyMap.load(file, BS, 512 * BS)), 'TM_ERR_VOLUME_GEOMETRY', 'other volume size');
  t.equal(await rejectedCode(DirtyMap.load(file, BS, 256 * BS - 1)), 'TM_ERR_VOLUME_GEOMETRY', 'one byte smaller');
  t.ok(await DirtyMap.load(file, BS, 256 * BS), 'the right geometry loads');
});

// Random set/clear operations against a Set<number> model.
const op = (blocks: number) => fc.record({
  set: fc.boolean(),
  first: fc.integer({ min: -3, max: blocks + 3 }),
  len: fc.integer({ min: 0, max: 80 }),
});
const scenario = fc.integer({ min: 0, max: 300 }).chain((blocks) => fc.record({
  blocks: fc.constant(blocks),
  ops: fc.array(op(blocks), { maxLength: 30 }),
  maxRun: fc.oneof(fc.constant(undefined), fc.integer({ min: 1, max: 70 })),
}));

function apply(blocks: number, ops: Array<{ set: boolean; first: number; len: number }>): { map: DirtyMap; model: Set<number> } {
  const map = new DirtyMap(blocks);
  const model = new Set<number>();
  for (const o of ops) {
    const end = o.first + o.len;
    if (o.set) map.set(o.first, end);
    else map.clear(o.first, end);
    for (let b = Math.max(0, o.first); b < Math.min(end, blocks); b++) {
      if (o.set) model.add(b);
      else model.delete(b);
    }
  }
  return { map, model };
}

/** Runs are in order, disjoint, non-empty, at most maxRun long, and cover exactly `model`. */
function checkRuns(runs: Array<[number, number]>, model: Set<number>, maxRun: number | undefined): void {
  const covered: number[] = [];
  let prevEnd = -1;
  for (const [first, end] of runs) {
    assert.ok(first < end, `run [${first}, ${end}) is not empty`);
    assert.ok(first >= prevEnd, `run [${first}, ${end}) starts after the previous one ended (${prevEnd})`);
    if (maxRun !== undefined) assert.ok(end - first <= maxRun, `run [${first}, ${end}) is at most ${maxRun} long`);
    // Unsplit runs are maximal: two runs may touch only where a maxRun split them.
    if (first === prevEnd) assert.ok(maxRun !== undefined, `runs touch at ${first} without a maxRun split`);
    for (let b = first; b < end; b++) covered.push(b);
    prevEnd = end;
  }
  assert.deepStrictEqual(covered, [...model].sort((a, b) => a - b));
}

t.test('property: random set/clear matches a Set<number>, and runs cover exactly the set blocks', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(scenario, ({ blocks, ops, maxRun }) => {
    const { map, model } = apply(blocks, ops);
    assert.equal(map.count, model.size, 'count');
    for (let b = 0; b < blocks; b++) assert.equal(map.has(b), model.has(b), `has(${b})`);
    checkRuns([...map.runs(maxRun)], model, maxRun);
  }), { numRuns: 1000 }));
});

t.test('property: save and load keep exactly the set blocks', async (t) => {
  await t.resolves(fc.assert(fc.asyncProperty(scenario, fc.integer({ min: 0, max: 511 }), async ({ blocks, ops }, tail) => {
    const { map, model } = apply(blocks, ops);
    // A volume whose last block may be short: same block count.
    const size = blocks === 0 ? 0 : (blocks - 1) * 512 + 1 + (tail % 512);
    const file = fresh();
    await map.save(file, 512, size, { blocks, ops: ops.length });
    const loaded = await DirtyMap.load(file, 512, size);
    fs.rmSync(file);
    assert.ok(loaded);
    assert.deepStrictEqual(loaded.meta, { blocks, ops: ops.length });
    assert.equal(loaded.map.count, model.size);
    checkRuns([...loaded.map.runs()], model, undefined);
  }), { numRuns: 200 }));
});
