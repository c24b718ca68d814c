// Extent data through the pipeline: LZ4 only when it helps, and the raw bytes always come back exact
// or not at all.
import t from 'tap';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import type { ExtentRecord } from '../../../proto/hrl.js';
import { compressExtent, DECOMPRESS_INLINE_BELOW, rawData, rawDataAsync, verifyRaw } from '../../../proto/extent-codec.js';
import { Rng } from '../../seed.js';

const rng = new Rng('extent-codec');

function record(raw: Buffer, offset = 1 << 20): ExtentRecord {
  return { offset, length: raw.length, crc32c: crc(raw), compression: 'NONE', storedLength: raw.length };
}

// Compressible but not periodic: log-like lines with changing numbers.
const text = Buffer.from(Array.from({ length: 1500 }, (_, i) => `2024-05-01T12:00:${String(i % 60).padStart(2, '0')} write block ${i * 7} ok\n`).join(''));
const noise = rng.bytes(64 * 1024);

function flipped(buf: Buffer, i: number, mask = 0xff): Buffer {
  const b = Buffer.from(buf);
  b[i]! ^= mask;
  return b;
}

function outcome(fn: () => Buffer, raw: Buffer): 'exact' | 'wrong bytes' | string {
  try {
    return fn().equals(raw) ? 'exact' : 'wrong bytes';
  } catch (e) {
    return e instanceof TidemarkError ? e.code : `not a TidemarkError: ${String(e)}`;
  }
}

t.test('compressible data is stored LZ4 and smaller', async (t) => {
  const { record: r, stored } = await compressExtent(record(text), text);
  t.equal(r.compression, 'LZ4');
  t.ok(stored.length < text.length / 2, `stored ${stored.length} of ${text.length} bytes`);
  t.equal(r.storedLength, stored.length, 'storedLength is the stored size');
  t.equal(r.length, text.length, 'length stays the raw size');
  t.equal(r.crc32c, crc(text), 'checksum stays that of the raw data');
  t.ok(rawData(r, stored, 'vol-1', 3).equals(text), 'rawData gives back the exact bytes');
});

t.test('random data is stored raw', async (t) => {
  const { record: r, stored } = await compressExtent(record(noise), noise);
  t.equal(r.compression, 'NONE');
  t.equal(r.storedLength, noise.length);
  t.ok(stored.equals(noise), 'stored bytes are the raw bytes');
  t.ok(rawData(r, stored, 'vol-1', 3).equals(noise), 'rawData gives back the exact bytes');
});

t.test('a flipped byte in stored LZ4 data is TM_ERR_EXTENT_CHECKSUM', async (t) => {
  const { record: r, stored } = await compressExtent(record(text), text);
  // Byte 4 is the first LZ4 token, byte 5 the first literal ('2' of the first date); the middle is mixed.
  for (const i of [4, 5, Math.floor(stored.length / 2), stored.length - 1]) {
    t.throws(() => rawData(r, flipped(stored, i), 'vol-1', 3), { code: 'TM_ERR_EXTENT_CHECKSUM' }, `flip at ${i} of ${stored.length}`);
  }
  t.throws(() => rawData(r, stored.subarray(0, stored.length - 10), 'vol-1', 3), { code: 'TM_ERR_EXTENT_CHECKSUM' }, 'cut short');
  const err = (() => {
    try {
      rawData(r, flipped(stored, 5), 'vol-1', 3);
    } catch (e) {
      return e as TidemarkError;
    }
  })();
  t.match(err?.context, { volume: 'vol-1', seq: 3, offset: 1 << 20 }, 'the error says which extent');
});

t.test('no single-byte flip of the LZ4 body gives back different bytes', async (t) => {
  const { record: r, stored } = await compressExtent(record(text), text);
  const bad: string[] = [];
  let caught = 0;
  for (let i = 4; i < stored.length; i += 3) { // bytes 0-3, the size prefix, are tested below
    for (const mask of [0x01, 0xff]) {
      const o = outcome(() => rawData(r, flipped(stored, i, mask), 'v', 1), text);
      if (o === 'TM_ERR_EXTENT_CHECKSUM') caught++;
      // 'exact' is possible (an equivalent LZ4 match); what matters is that nothing else comes back.
      else if (o !== 'exact') bad.push(`byte ${i} ^${mask}: ${o}`);
    }
  }
  t.strictSame(bad, []);
  t.ok(caught > 0, `${caught} flips caught`);
});

t.test('a size prefix that disagrees with the record is refused', async (t) => {
  const { record: r, stored } = await compressExtent(record(text), text);
  t.equal(stored.readUInt32LE(0), text.length, 'LZ4 data starts with the raw size');
  t.equal(outcome(() => rawData(r, flipped(stored, 0, 0x01), 'v', 1), text), 'TM_ERR_EXTENT_CHECKSUM', 'smaller size');
  t.equal(outcome(() => rawData(r, flipped(stored, 2, 0x01), 'v', 1), text), 'TM_ERR_EXTENT_CHECKSUM', 'larger size (+128 KiB)');
  t.equal(outcome(() => rawData(r, flipped(stored, 3, 0x01), 'v', 1), text), 'TM_ERR_EXTENT_CHECKSUM', 'larger size (+16 MiB)');
});

t.test('a flipped byte in raw stored data is TM_ERR_EXTENT_CHECKSUM', async (t) => {
  const r = record(noise);
  for (const i of [0, 1000, noise.length - 1]) {
    t.throws(() => rawData(r, flipped(noise, i, 0x10), 'vol-1', 3), { code: 'TM_ERR_EXTENT_CHECKSUM' }, `flip at ${i}`);
  }
  t.throws(() => verifyRaw(r, noise.subarray(1), 'vol-1', 3), { code: 'TM_ERR_EXTENT_CHECKSUM' }, 'wrong length');
});

t.test('rawDataAsync: exact bytes or TM_ERR_EXTENT_CHECKSUM, inline below DECOMPRESS_INLINE_BELOW and on the pool above', async (t) => {
  const big = Buffer.concat(Array.from({ length: Math.ceil((2 * DECOMPRESS_INLINE_BELOW) / text.length) }, () => text));
  for (const raw of [text.subarray(0, 4096), text.subarray(0, DECOMPRESS_INLINE_BELOW - 1), big]) {
    const { record: r, stored } = await compressExtent(record(raw), raw);
    t.equal(r.compression, 'LZ4', `${raw.length} bytes compress`);
    t.ok((await rawDataAsync(r, stored, 'v', 1)).equals(raw), `${raw.length} bytes: exact`);
    await t.rejects(rawDataAsync(r, flipped(stored, Math.floor(stored.length / 2)), 'v', 1), { code: 'TM_ERR_EXTENT_CHECKSUM' }, `${raw.length} bytes: a flipped byte is caught`);
    await t.rejects(rawDataAsync({ ...r, crc32c: (r.crc32c ^ 1) >>> 0 }, stored, 'v', 1), { code: 'TM_ERR_EXTENT_CHECKSUM' }, `${raw.length} bytes: a wrong checksum is caught`);
  }
});

