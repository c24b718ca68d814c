// The per-block hash table file (version 3): what is saved loads back exactly with its sequence, a save
// after a differential rewrites only the header and the pages it changed (in place), damage anywhere is
// refused, versions 1 and 2 still load and are rewritten whole, and a failed in-place save is never trusted.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc } from '../../../common/checksum.js';
import { HashTableFile, PAGE, PAGE_HASHES } from '../../../common/hash-table.js';

const BS = 4096;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-ht-'));
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(root, `t${n++}.bin`);

/** Deterministic, distinct hashes (no randomness needed). */
const h = (i: number): bigint => BigInt(i) * 0x9e3779b97f4a7c15n + 1n;
const table = (blocks: number, value: bigint): BigUint64Array => new BigUint64Array(blocks).fill(value);

t.test('saved tables load back exactly with their sequence, short last page included', async (t) => {
  for (const blocks of [0, 1, PAGE_HASHES, PAGE_HASHES + 1, 3 * PAGE_HASHES + 17]) {
    const size = blocks * BS - (blocks > 0 ? 100 : 0); // a short last block
    const file = new HashTableFile(fresh(), BS, size);
    const hashes = table(blocks, 7n);
    for (let i = 0; i < blocks; i += 3) hashes[i] = h(i);
    await file.save(hashes, 41);
    const back = await new HashTableFile(file.file, BS, size).load();
    t.strictSame(Array.from(back!.hashes), Array.from(hashes), `${blocks} blocks`);
    t.equal(back!.seq, 41, 'with the sequence it reflects');
  }
  t.equal(await new HashTableFile(fresh(), BS, BS).load(), null, 'no file: no table');
});

t.test('a save after a few changes rewrites only the header and their pages, in place', async (t) => {
  const blocks = 40 * PAGE_HASHES; // 160 KiB of table
  const file = new HashTableFile(fresh(), BS, blocks * BS);
  const hashes = table(blocks, 1n);
  await file.save(hashes, 1);
  const before = fs.statSync(file.file);
  const bytesBefore = fs.readFileSync(file.file);
  hashes[5] = h(5);
  file.changed(5);
  hashes.set([h(1), h(2)], 7 * PAGE_HASHES - 1); // straddles pages 6 and 7
  file.changed(7 * PAGE_HASHES - 1, 7 * PAGE_HASHES + 1);
  t.equal(file.pendingPages, 3, 'three pages changed');
  await file.save(hashes, 2);
  t.equal(file.pendingPages, 0);
  t.equal(fs.statSync(file.file).ino, before.ino, 'same file: updated in place, not rewritten through a new one');
  const bytesAfter = fs.readFileSync(file.file);
  const changed: number[] = [];
  for (let p = 0; p * PAGE < bytesAfter.length; p++) {
    if (!bytesAfter.subarray(p * PAGE, (p + 1) * PAGE).equals(bytesBefore.subarray(p * PAGE, (p + 1) * PAGE))) changed.push(p - 1);
  }
  t.strictSame(changed, [-1, 0, 6, 7], 'only the header (new sequence) and the changed table pages differ on disk');
  const back = await new HashTableFile(file.file, BS, blocks * BS).load();
  t.strictSame(Array.from(back!.hashes), Array.from(hashes), 'and it loads back as in memory');
  t.equal(back!.seq, 2);
});

t.test('damage in any page, the header, or the length is refused', async (t) => {
  const blocks = 3 * PAGE_HASHES + 5;
  const file = new HashTableFile(fresh(), BS, blocks * BS);
  await file.save(table(blocks, 3n), 9);
  const good = fs.readFileSync(file.file);
  const cases: Array<[string, (b: Buffer) => Buffer]> = [
    ['a hash in page 2', (b) => ((b[3 * PAGE + 80]! ^= 1), b)],
    ['a page index', (b) => ((b[PAGE + PAGE_HASHES * 8]! ^= 1), b)],
    ['the short last page', (b) => ((b[4 * PAGE + 8]! ^= 1), b)],
    ['the header', (b) => ((b[8]! ^= 1), b)],
    ['the sequence in the header', (b) => ((b[29]! ^= 1), b)],
    ['a truncated file', (b) => b.subarray(0, b.length - 8)],
  ];
  for (const [what, damage] of cases) {
    fs.writeFileSync(file.file, damage(Buffer.from(good)));
    await t.rejects(new HashTableFile(file.file, BS, blocks * BS).load(), { code: 'TM_ERR_STATE_CORRUPT' }, what);
  }
  const swapped = Buffer.from(good);
  swapped.copy(swapped, PAGE, 2 * PAGE, 3 * PAGE); // page 0 replaced by a valid copy of page 1
  fs.writeFileSync(file.file, swapped);
  await t.rejects(new HashTableFile(file.file, BS, blocks * BS).load(), { code: 'TM_ERR_STATE_CORRUPT' }, 'a page written at the wrong place');
  fs.writeFileSync(file.file, good);
  await t.rejects(new HashTableFile(file.file, BS, (blocks + 1) * BS).load(), { code: 'TM_ERR_VOLUME_GEOMETRY' }, 'another volume size');
});

t.test('a newer version is refused with a clear error', async (t) => {
  const file = new HashTableFile(fresh(), BS, 8 * BS);
  await file.save(table(8, 3n));
  const b = fs.readFileSync(file.file);
  b.writeUInt16LE(4, 4);
  b.writeUInt32LE(crc(b.subarray(0, 36)), 36);
  fs.writeFileSync(file.file, b);
  await t.rejects(file.load(), { code: 'TM_ERR_STATE_CORRUPT', message: /newer format version 4/ });
});

/** A version 1 (32-byte header, no sequence) or version 2 (40 bytes, with one) file of `hashes`. */
function oldFile(version: 1 | 2, hashes: BigUint64Array, seq: number): Buffer {
  const body = Buffer.from(hashes.buffer);
  const head = Buffer.alloc(version === 1 ? 32 : 40);
  head.writeUInt32LE(0x48424d54, 0);
  head.writeUInt16LE(version, 4);
  head.writeUInt32LE(BS, 8);
  head.writeBigUInt64LE(BigInt(hashes.length * BS), 16);
  head.writeUInt32LE(crc(body), 24);
  if (version === 2) head.writeBigUInt64LE(BigInt(seq), 28);
  const at = version === 1 ? 28 : 36;
  head.writeUInt32LE(crc(head.subarray(0, at)), at);
  return Buffer.concat([head, body]);
}

t.test('version 1 and 2 files load, and their next save writes version 3 whole', async (t) => {
  for (const version of [1, 2] as const) {
    const blocks = PAGE_HASHES + 9;
    const hashes = BigUint64Array.from({ length: blocks }, (_, i) => h(i));
    const file = new HashTableFile(fresh(), BS, blocks * BS);
    fs.writeFileSync(file.file, oldFile(version, hashes, 12));
    const loaded = (await file.load())!;
    t.strictSame(Array.from(loaded.hashes), Array.from(hashes), `version ${version} reads`);
    t.equal(loaded.seq, version === 1 ? null : 12, 'with its sequence where it has one');
    t.equal(file.pendingPages, 2, 'and is due to be written whole');
    const ino = fs.statSync(file.file).ino;
    loaded.hashes[3] = 5n;
    file.changed(3);
    await file.save(loaded.hashes, 13);
    t.not(fs.statSync(file.file).ino, ino, 'through a new file');
    t.equal(fs.readFileSync(file.file).readUInt16LE(4), 3, 'rewritten as version 3');
    const back = (await new HashTableFile(file.file, BS, blocks * BS).load())!;
    t.strictSame(Array.from(back.hashes), Array.from(loaded.hashes));
    t.equal(back.seq, 13);
  }
});

t.test('a save that fails part-way is followed by a whole rewrite, never a partial one trusted', async (t) => {
  const blocks = 4 * PAGE_HASHES;
  const file = new HashTableFile(fresh(), BS, blocks * BS);
  const hashes = table(blocks, 2n);
  await file.save(hashes, 1);
  hashes[PAGE_HASHES + 1] = h(1);
  file.changed(PAGE_HASHES + 1);
  // The in-place save cannot open the file for writing: it must say so, not report success.
  fs.rmSync(file.file);
  fs.mkdirSync(file.file); // a directory where the table was: open('r+') fails with EISDIR
  await t.rejects(file.save(hashes, 2), { code: 'EISDIR' }, 'the failure is reported');
  fs.rmdirSync(file.file);
  fs.writeFileSync(file.file, 'garbage left by the failed save');
  t.equal(file.pendingPages, 4, 'the next save writes every page');
  await file.save(hashes, 2);
  const back = (await new HashTableFile(file.file, BS, blocks * BS).load())!;
  t.strictSame(Array.from(back.hashes), Array.from(hashes), 'the whole table is back on disk');
  t.equal(back.seq, 2);
});

t.test('a file deleted under the table is written whole again at the next save', async (t) => {
  const blocks = 2 * PAGE_HASHES;
  const file = new HashTableFile(fresh(), BS, blocks * BS);
  const hashes = table(blocks, 4n);
  await file.save(hashes, 3);
  fs.rmSync(file.file);
  hashes[0] = h(0);
  file.changed(0);
  await file.save(hashes, 4);
  const back = (await new HashTableFile(file.file, BS, blocks * BS).load())!;
  t.strictSame(Array.from(back.hashes), Array.from(hashes));
  t.equal(back.seq, 4);
});

t.test('a captured save writes the table as it was captured, not as it changed since; a later capture writes the rest', async (t) => {
  const blocks = 4 * PAGE_HASHES;
  const file = new HashTableFile(fresh(), BS, blocks * BS);
  const hashes = table(blocks, 1n);
  await file.save(hashes, 1);
  hashes[5] = h(5);
  file.changed(5);
  const captured = file.capture(hashes);
  const atCapture = Array.from(hashes);
  // The next group changes the table (same page and another) before the captured save is written.
  hashes[6] = h(6);
  hashes[3 * PAGE_HASHES] = h(9);
  file.changed(6);
  file.changed(3 * PAGE_HASHES);
  t.ok(await file.saveCaptured(captured, 2), 'written');
  let back = await new HashTableFile(file.file, BS, blocks * BS).load();
  t.strictSame(Array.from(back!.hashes), atCapture, 'the file holds the table as captured');
  t.equal(back!.seq, 2, 'as reflecting its sequence');
  t.ok(await file.saveCaptured(file.capture(hashes), 3), 'the next capture written');
  back = await new HashTableFile(file.file, BS, blocks * BS).load();
  t.strictSame(Array.from(back!.hashes), Array.from(hashes), 'then the changes made after the first capture');
  // Pages captured but gone with their file: nothing written; the next capture is whole.
  hashes[7] = h(7);
  file.changed(7);
  const partial = file.capture(hashes);
  fs.rmSync(file.file);
  t.equal(await file.saveCaptured(partial, 4), false, 'a capture of changed pages is not written over a missing file');
  t.notOk(fs.existsSync(file.file), 'and no partial file appears');
  t.equal(file.pendingPages, 4, 'the next save writes every page');
  await file.save(hashes, 4);
  back = await new HashTableFile(file.file, BS, blocks * BS).load();
  t.strictSame(Array.from(back!.hashes), Array.from(hashes), 'which it does');
});
