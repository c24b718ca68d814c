// The .hrl differential file: what is written is what is read, and damage is always reported, never
// returned as a different differential.
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import { BATCH_BYTES, BATCH_IOVECS, HrlWriter, decodeHrl, hrlName, readHrl, salvageRanges, type DiffHeader, type Extent } from '../../../proto/hrl.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const DAMAGE = ['TM_ERR_HRL_CORRUPT', 'TM_ERR_HRL_TRUNCATED'];

function extent(offset: number, data: Buffer): Extent {
  return { offset, length: data.length, crc32c: crc(data), compression: 'NONE', storedLength: data.length, data };
}

const header: DiffHeader = {
  volumeId: 'vol-1', seq: 42, startTimeMs: 1_700_000_000_000, endTimeMs: 1_700_000_002_000,
  volumeSize: 1 << 30, blockSize: 4096, consistency: 'APP', flags: 1, tags: ['pre-backup', 'ü-tag'],
};
const extents = [extent(0, Buffer.alloc(4096, 0xab)), extent(8192, Buffer.from('hello tidemark')), extent(2 ** 40, Buffer.alloc(3, 7))];

async function writeDiff(h: DiffHeader, es: Extent[]): Promise<{ file: string; digest: number }> {
  const w = await HrlWriter.create(dir, h);
  for (const e of es) await w.append(e, e.data);
  const digest = await w.commit();
  return { file: path.join(dir, hrlName(h.seq)), digest };
}

/** The code of what `fn` throws; 'no throw' when it returns, the message when it is no TidemarkError. */
function thrownCode(fn: () => unknown): string {
  try {
    fn();
    return 'no throw';
  } catch (e) {
    return e instanceof TidemarkError ? e.code : `not a TidemarkError: ${String(e)}`;
  }
}

function flipped(buf: Buffer, i: number, mask = 0xff): Buffer {
  const b = Buffer.from(buf);
  b[i]! ^= mask;
  return b;
}

function plain(es: readonly Extent[]) {
  return es.map((e) => ({ ...e, data: Buffer.from(e.data) }));
}

let sample: Buffer; // a valid encoded file, written once
let sampleHeaderLength = 0;

t.before(async () => {
  sample = fs.readFileSync((await writeDiff(header, extents)).file);
  sampleHeaderLength = sample.readUInt16LE(6);
});

t.test('write, commit, read back', async (t) => {
  const h = { ...header, seq: 7 };
  const w = await HrlWriter.create(dir, h);
  for (const e of extents) await w.append(e, e.data);
  t.strictSame(fs.readdirSync(dir).filter((n) => n.startsWith(hrlName(7))), [hrlName(7) + '.tmp'], 'before commit only the .tmp exists');
  const digest = await w.commit();
  t.strictSame(fs.readdirSync(dir).filter((n) => n.startsWith(hrlName(7))), [hrlName(7)], 'after commit only the final file exists');
  const d = await readHrl(path.join(dir, hrlName(7)));
  t.strictSame(d.header, h, 'header fields equal');
  t.strictSame(plain(d.extents), plain(extents), 'extent records and data bytes equal');
  t.equal(d.dataBytes, 4096 + 14 + 3, 'data byte count');
  t.equal(d.extentDigest, digest, 'digest equals what commit returned');
});

t.test('an empty differential round-trips', async (t) => {
  const h = { ...header, seq: 8, tags: [] };
  const d = await readHrl((await writeDiff(h, [])).file);
  t.strictSame(d.header, h);
  t.equal(d.extents.length, 0);
});

t.test('abort leaves nothing', async (t) => {
  const w = await HrlWriter.create(dir, { ...header, seq: 9 });
  await w.append(extents[0]!, extents[0]!.data);
  await w.abort();
  t.strictSame(fs.readdirSync(dir).filter((n) => n.startsWith(hrlName(9))), [], 'no .hrl and no .tmp');
});

t.test('append refuses stored bytes that disagree with the record', async (t) => {
  const w = await HrlWriter.create(dir, { ...header, seq: 10 });
  t.teardown(() => w.abort());
  await t.rejects(w.append({ ...extents[1]!, storedLength: 99 }, extents[1]!.data), { code: 'TM_ERR_PROTOCOL' });
});

const headerArb: fc.Arbitrary<DiffHeader> = fc.record({
  volumeId: fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/),
  seq: fc.integer({ min: 0, max: 2 ** 40 }),
  startTimeMs: fc.integer({ min: 0, max: 2 ** 45 }),
  endTimeMs: fc.integer({ min: 0, max: 2 ** 45 }),
  volumeSize: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  blockSize: fc.constantFrom(512, 4096, 65536, 1 << 20),
  consistency: fc.constantFrom('FUZZY' as const, 'CRASH' as const, 'APP' as const),
  flags: fc.integer({ min: 0, max: 255 }),
  // Tags are stored newline-joined, so a tag can hold neither '\n' nor be empty.
  tags: fc.array(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\n')), { maxLength: 4 }),
});
const extentsArb = fc.array(
  fc.record({ offset: fc.integer({ min: 0, max: 2 ** 50 }), data: fc.uint8Array({ maxLength: 64 }) }).map((r) => extent(r.offset, Buffer.from(r.data))),
  { maxLength: 6 },
);
/** A random valid file plus the diff it holds. */
const fileArb = fc.tuple(headerArb, extentsArb);

async function encoded(h: DiffHeader, es: Extent[]): Promise<Buffer> {
  const { file } = await writeDiff(h, es);
  const buf = fs.readFileSync(file);
  fs.rmSync(file);
  return buf;
}

t.test('property: random differentials round-trip exactly', async (t) => {
  await t.resolves(fc.assert(fc.asyncProperty(fileArb, async ([h, es]) => {
    const d = decodeHrl(await encoded(h, es));
    assert.deepEqual({ ...d.header }, { ...h }); // fast-check records have a null prototype
    assert.deepEqual(plain(d.extents), plain(es));
  }), { numRuns: 100 }));
});

t.test('property: one flipped byte outside the version field is always reported as damage', async (t) => {
  const arb = fc.tuple(fileArb, fc.nat(), fc.integer({ min: 1, max: 255 }));
  await t.resolves(fc.assert(fc.asyncProperty(arb, async ([[h, es], at, mask]) => {
    const buf = await encoded(h, es);
    let i = at % (buf.length - 2);
    if (i >= 4) i += 2; // bytes 4-5 (version) are covered below
    assert.ok(DAMAGE.includes(thrownCode(() => decodeHrl(flipped(buf, i, mask)))), `flip at ${i}`);
  }), { numRuns: 100 }));
});

t.test('every single-byte flip of a sample file is reported as damage', async (t) => {
  const wrong: string[] = [];
  const versionWrong: string[] = [];
  for (let i = 0; i < sample.length; i++) {
    for (const mask of [0x01, 0x80, 0xff]) {
      const code = thrownCode(() => decodeHrl(flipped(sample, i, mask)));
      if (!DAMAGE.includes(code)) (i === 4 || i === 5 ? versionWrong : wrong).push(`byte ${i} ^${mask}: ${code}`);
    }
  }
  t.strictSame(wrong, [], 'flips outside the version field');
  t.strictSame(versionWrong, [], 'flips in the version field');
});

t.test('truncation at every length is reported', async (t) => {
  const wrong: string[] = [];
  for (let n = 0; n < sample.length; n++) {
    const code = thrownCode(() => decodeHrl(sample.subarray(0, n)));
    if (!DAMAGE.includes(code)) wrong.push(`length ${n}: ${code}`);
  }
  t.strictSame(wrong, []);
});

t.test('property: truncated random files are reported', async (t) => {
  await t.resolves(fc.assert(fc.asyncProperty(fileArb, fc.nat(), async ([h, es], cut) => {
    const buf = await encoded(h, es);
    const code = thrownCode(() => decodeHrl(buf.subarray(0, cut % buf.length)));
    assert.ok(DAMAGE.includes(code), `cut at ${cut % buf.length} of ${buf.length}: ${code}`);
  }), { numRuns: 100 }));
});

t.test('a well-formed header from format version 2 is refused as TM_ERR_HRL_VERSION', async (t) => {
  const b = Buffer.from(sample);
  b.writeUInt16LE(2, 4);
  b.writeUInt32LE(crc(b.subarray(0, sampleHeaderLength - 4)), sampleHeaderLength - 4);
  const end = b.length - 24;
  b.writeUInt32LE(crc(b.subarray(0, end + 20)), end + 20);
  t.equal(thrownCode(() => decodeHrl(b)), 'TM_ERR_HRL_VERSION');
});

t.test('salvageRanges', async (t) => {
  const ranges = extents.map((e) => ({ offset: e.offset, length: e.length }));
  const dataByte = sampleHeaderLength + 28 + 100; // inside the first extent's data
  t.equal(thrownCode(() => decodeHrl(flipped(sample, dataByte))), 'TM_ERR_HRL_CORRUPT', 'the damaged file does not decode');
  t.strictSame(salvageRanges(flipped(sample, dataByte)), ranges, 'flipped data byte: exactly the written ranges');
  t.equal(salvageRanges(flipped(sample, 0)), null, 'bad magic: null');
  t.equal(salvageRanges(flipped(sample, 20)), null, 'header checksum mismatch: null');
  t.equal(salvageRanges(flipped(sample, sampleHeaderLength + 3)), null, 'damaged extent header: null');
  for (const cut of [sample.length - 1, sample.length - 24, sampleHeaderLength + 28 + 4096 + 5, 30]) {
    t.equal(salvageRanges(sample.subarray(0, cut)), null, `truncated to ${cut} bytes: null`);
  }
});

t.test('extents written in batches (many per pwritev) read back whole, in order, past every batch limit', async (t) => {
  // More buffers than one batch takes, more bytes than one batch holds, and empty extents among them.
  const many: Extent[] = [];
  let off = 0;
  for (let i = 0; i < BATCH_IOVECS + 37; i++) {
    const len = i % 97 === 0 ? 0 : 4096;
    const data = Buffer.alloc(len, i & 0xff);
    many.push(extent(off, data));
    off += 4096;
  }
  for (let i = 0; i < 3; i++) many.push(extent(off + i * BATCH_BYTES, Buffer.alloc(BATCH_BYTES - 1000, 0x30 + i)));
  const h = { ...header, seq: 9001 };
  const { file, digest } = await writeDiff(h, many);
  const back = await readHrl(file);
  t.equal(back.extentDigest, digest);
  t.equal(back.extents.length, many.length);
  t.ok(back.extents.every((e, i) => e.offset === many[i]!.offset && e.data.equals(many[i]!.data)), 'every extent\'s bytes as appended');
});

t.test('a file crc combined from the callers\' extent crcs is the one computed from the bytes; a wrong one is caught', async (t) => {
  const h = { ...header, seq: 9100 };
  const computed = fs.readFileSync((await writeDiff(h, extents)).file);
  const other = fs.mkdtempSync(path.join(dir, 'given-'));
  const w = await HrlWriter.create(other, h);
  for (const e of extents) await w.append(e, e.data, e.crc32c);
  await w.commit();
  t.ok(fs.readFileSync(path.join(other, hrlName(h.seq))).equals(computed), 'byte for byte the same file, file crc included');
  const bad = await HrlWriter.create(other, { ...h, seq: 9101 });
  for (const [i, e] of extents.entries()) await bad.append(e, e.data, i === 1 ? (e.crc32c ^ 4) >>> 0 : e.crc32c);
  await bad.commit();
  await t.rejects(readHrl(path.join(other, hrlName(9101))), { code: 'TM_ERR_HRL_CORRUPT' }, 'a crc that is not the bytes\' makes the file fail its check');
});
