// Compression that pays: every extent comes back exact, extents LZ4 does not shrink by 5% are stored
// raw, and the per-volume figures add up to what was stored.
import fc from 'fast-check';
import t from 'tap';
import { crc } from '../../../common/checksum.js';
import { Compressor, INLINE_BELOW, PROBE_FROM } from '../../../process-server/compressor.js';
import { chooseStored, LZ4_KEEP_RAW_AT, rawData } from '../../../proto/extent-codec.js';
import type { ExtentRecord } from '../../../proto/hrl.js';
import { Rng, seedFastCheck } from '../../seed.js';

seedFastCheck();
const rng = new Rng('compressor');

function record(raw: Buffer, offset = 4096): ExtentRecord {
  return { offset, length: raw.length, crc32c: crc(raw), compression: 'NONE', storedLength: raw.length };
}

/** Block-like contents: random runs, zero runs and repeated patterns, at sizes around the inline threshold. */
const segment = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 4096 }).map((a) => Buffer.from(a)),
  fc.integer({ min: 1, max: 65536 }).map((n) => Buffer.alloc(n)),
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 32 }), fc.integer({ min: 1, max: 4096 })).map(([p, n]) => Buffer.concat(Array.from({ length: n }, () => Buffer.from(p)))),
);
const extentData = fc.array(segment, { minLength: 1, maxLength: 12 }).map((parts) => Buffer.concat(parts).subarray(0, 300_000));

t.test('any extent: stored form decodes to the exact bytes, LZ4 only when it saves 5%', async (t) => {
  const c = new Compressor('lz4', {}, 2);
  let n = 0;
  let raw = 0;
  let stored = 0;
  await fc.assert(fc.asyncProperty(extentData, async (data) => {
    const e = record(data);
    const out = await c.pack('v', e, data);
    n++;
    raw += data.length;
    stored += out.stored.length;
    if (!rawData(out.record, out.stored, 'v', 1).equals(data)) return false;
    if (out.record.length !== data.length || out.record.crc32c !== e.crc32c || out.record.storedLength !== out.stored.length) return false;
    return out.record.compression === 'LZ4' ? out.stored.length < data.length * LZ4_KEEP_RAW_AT : out.stored.equals(data);
  }), { numRuns: 150 });
  const s = c.stats('v');
  t.equal(s.compressedExtents + s.skippedExtents, n, 'every extent counted once, compressed or skipped');
  t.equal(s.rawBytes, raw, 'rawBytes is the data received');
  t.equal(s.storedBytes, stored, 'storedBytes is what was stored');
  t.ok(s.compressedExtents > 0 && s.skippedExtents > 0, `both outcomes were exercised (${s.compressedExtents} compressed, ${s.skippedExtents} skipped)`);
  t.equal(s.ratio, Math.round((100 * raw) / stored) / 100, 'ratio is raw over stored');
});

t.test('incompressible extents, small and large, are stored raw and counted as skipped', async (t) => {
  const c = new Compressor('lz4');
  for (const size of [4096, INLINE_BELOW - 4096, INLINE_BELOW, 1 << 20]) {
    const noise = rng.bytes(size);
    const out = await c.pack('noise', record(noise), noise);
    t.equal(out.record.compression, 'NONE', `${size} random bytes: raw`);
    t.ok(out.stored.equals(noise), 'stored bytes are the raw bytes');
  }
  const s = c.stats('noise');
  t.strictSame({ skipped: s.skippedExtents, compressed: s.compressedExtents, ratio: s.ratio }, { skipped: 4, compressed: 0, ratio: 1 });
  t.ok(s.cpuMs > 0, `the attempt is counted as CPU time (${s.cpuMs} ms)`);
});

t.test('the 95% rule: a saving under 5% is not worth storing compressed', async (t) => {
  const raw = Buffer.alloc(10_000, 7);
  const e = record(raw);
  t.equal(chooseStored(e, raw, Buffer.alloc(9_500)).record.compression, 'NONE', '95% of raw: kept raw');
  t.equal(chooseStored(e, raw, Buffer.alloc(9_499)).record.compression, 'LZ4', 'just under 95%: compressed');
  t.equal(chooseStored(e, raw, Buffer.alloc(10_050)).record.compression, 'NONE', 'larger than raw: kept raw');
});

t.test('volumes are counted apart; compression "none" stores raw and compresses nothing', async (t) => {
  const zeros = Buffer.alloc(256 * 1024);
  const c = new Compressor('lz4');
  await c.pack('a', record(zeros), zeros);
  await c.pack('a', record(zeros), zeros);
  t.equal(c.stats('a').compressedExtents, 2);
  t.ok(c.stats('a').ratio > 50, `zeros compress (ratio ${c.stats('a').ratio})`);
  t.strictSame(c.stats('b'), { rawBytes: 0, storedBytes: 0, ratio: 1, cpuMs: 0, skippedExtents: 0, compressedExtents: 0, probeSkippedExtents: 0, state: 'lz4', lastWindowSavingPercent: null, rests: 0, restedBytes: 0 }, 'an idle volume has empty figures');
  const off = new Compressor('none');
  const out = await off.pack('a', record(zeros), zeros);
  t.equal(out.record.compression, 'NONE');
  t.strictSame(off.stats('a'), { rawBytes: zeros.length, storedBytes: zeros.length, ratio: 1, cpuMs: 0, skippedExtents: 0, compressedExtents: 0, probeSkippedExtents: 0, state: 'none', lastWindowSavingPercent: null, rests: 0, restedBytes: 0 });
});

t.test('more extents in flight than threads: each waits its turn and all come back exact', async (t) => {
  const c = new Compressor('lz4', {}, 1);
  const inputs = Array.from({ length: 12 }, (_, i) => Buffer.concat([Buffer.alloc(100_000 + i * 1000, i), rng.bytes(30_000)]));
  const outs = await Promise.all(inputs.map((d) => c.pack('q', record(d), d)));
  t.ok(outs.every((o, i) => rawData(o.record, o.stored, 'q', 1).equals(inputs[i]!)), 'every extent decodes to its own bytes');
  t.equal(c.stats('q').compressedExtents, 12);
});

t.test('large incompressible extents are judged by samples and never compressed whole', async (t) => {
  const c = new Compressor('lz4');
  const noise = rng.bytes(1 << 20);
  const out = await c.pack('p', record(noise), noise);
  t.equal(out.record.compression, 'NONE', 'stored raw');
  t.ok(out.stored.equals(noise));
  t.strictSame({ skipped: c.stats('p').skippedExtents, probed: c.stats('p').probeSkippedExtents }, { skipped: 1, probed: 1 }, 'skipped by the probe');
  const small = rng.bytes(PROBE_FROM - 4096);
  await c.pack('p', record(small), small);
  t.strictSame({ skipped: c.stats('p').skippedExtents, probed: c.stats('p').probeSkippedExtents }, { skipped: 2, probed: 1 }, 'below PROBE_FROM: compressed, then kept raw (no probe)');
  // Compressible only at the start, the middle or the end: one good sample is enough to try the whole.
  for (const where of [0, 0.5, 1]) {
    const mixed = rng.bytes(1 << 20);
    const at = Math.max(0, Math.min(mixed.length - 256 * 1024, Math.floor(where * mixed.length) - 128 * 1024));
    mixed.fill(0, at, at + 256 * 1024);
    const m = await c.pack('m', record(mixed), mixed);
    t.equal(m.record.compression, 'LZ4', `a quarter of zeros at ${where}: compressed`);
    t.ok(rawData(m.record, m.stored, 'm', 1).equals(mixed), 'and decodes exactly');
  }
  t.equal(c.stats('m').probeSkippedExtents, 0);
});

/** 64 KiB that LZ4 takes to about 92%: a zero run, then noise (full compression cost for 8% of the bytes). */
function barely(): Buffer {
  const b = rng.bytes(64 * 1024);
  b.fill(0, 0, 5400);
  return b;
}

t.test('adaptive: a volume whose windows save too little rests (stored raw, untried), then is tried again', async (t) => {
  const MiB = 1024 * 1024;
  const c = new Compressor('lz4', { minSavingPercent: 10, windowBytes: MiB, restBytes: 2 * MiB });
  const pack = async (v: string, d: Buffer): Promise<string> => {
    const out = await c.pack(v, record(d), d);
    if (!rawData(out.record, out.stored, v, 1).equals(d)) t.fail(`${v}: an extent did not decode to its bytes`);
    return out.record.compression;
  };
  // One window (16 extents of 64 KiB): compressed each, but saving ~8% in all.
  const first: string[] = [];
  for (let i = 0; i < 16; i++) first.push(await pack('db', barely()));
  t.ok(first.every((k) => k === 'LZ4'), 'each extent of the first window was compressed (it passes the 95% bar)');
  const judged = c.stats('db');
  t.ok(judged.lastWindowSavingPercent !== null && judged.lastWindowSavingPercent > 0 && judged.lastWindowSavingPercent < 10, `the window saved ${judged.lastWindowSavingPercent}%`);
  t.equal(judged.state, 'resting', 'so the volume rests');
  t.equal(judged.rests, 1);
  // Resting: 2 MiB stored raw, without spending time on them.
  const cpu = judged.cpuMs;
  const rested: string[] = [];
  for (let i = 0; i < 32; i++) rested.push(await pack('db', barely()));
  t.ok(rested.every((k) => k === 'NONE'), 'while resting, extents are stored raw');
  t.equal(c.stats('db').cpuMs, cpu, 'and not compressed or probed');
  t.equal(c.stats('db').restedBytes, 2 * MiB);
  t.equal(c.stats('db').state, 'lz4', 'after the rest the volume is tried again');
  t.equal(await pack('db', barely()), 'LZ4', 'the next extent is compressed');
  // A volume that compresses well never rests; the stats add up.
  for (let i = 0; i < 40; i++) await pack('text', Buffer.alloc(64 * 1024, i % 7));
  t.strictSame({ state: c.stats('text').state, rests: c.stats('text').rests }, { state: 'lz4', rests: 0 }, 'compressible data keeps LZ4');
  const s = c.stats('db');
  t.equal(s.compressedExtents + s.skippedExtents, 49, 'every extent counted once');
});

t.test('adaptive: minSavingPercent 0 never rests', async (t) => {
  const c = new Compressor('lz4', { minSavingPercent: 0, windowBytes: 256 * 1024, restBytes: 1024 * 1024 });
  for (let i = 0; i < 24; i++) {
    const d = barely();
    t.equal((await c.pack('db', record(d), d)).record.compression, 'LZ4');
  }
  t.equal(c.stats('db').rests, 0);
});

t.test('adaptive: extents the probe turns away do not count, so mixed data keeps compressing what compresses', async (t) => {
  // 90% noise (probe-skipped, almost free) and 10% text-like data: judged on all bytes the window would
  // save ~5% and rest, storing the compressible tenth raw too, to save almost no CPU.
  const c = new Compressor('lz4', { minSavingPercent: 10, windowBytes: 256 * 1024, restBytes: 1024 * 1024 });
  for (let i = 0; i < 200; i++) {
    const d = i % 10 === 0 ? Buffer.alloc(64 * 1024, i % 7) : rng.bytes(64 * 1024);
    const out = await c.pack('mixed', record(d), d);
    if (!rawData(out.record, out.stored, 'mixed', 1).equals(d)) t.fail('an extent did not decode to its bytes');
  }
  const s = c.stats('mixed');
  t.equal(s.rests, 0, 'never rests');
  t.equal(s.compressedExtents, 20, 'every compressible extent was compressed');
  t.equal(s.probeSkippedExtents, 180, 'the noise was turned away by the probe');
});
