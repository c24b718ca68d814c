// A binary state file is trusted only when its header checks out: missing is "none", damage or a newer
// version is TM_ERR_STATE_CORRUPT, another volume's geometry is TM_ERR_VOLUME_GEOMETRY, and any other read
// failure is passed on rather than read as "none". Through the hash table, the real user of the checks.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import { loadHashTable, saveHashTable } from '../../../common/hash-table.js';
import { readStateFile } from '../../../common/state-file.js';

const BS = 4096;
const SIZE = 64 * BS;
const SPEC = { magic: 0x48424d54, version: 1, headerCrcAt: 28 };

async function table(t: Test): Promise<{ file: string; bytes: Buffer; hashes: BigUint64Array }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-state-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'hashes.bin');
  const hashes = new BigUint64Array(SIZE / BS).map((_, i) => BigInt(i) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn);
  await saveHashTable(file, BS, SIZE, hashes);
  return { file, bytes: await fsp.readFile(file), hashes };
}

/** The code a promise rejects with ('' if it resolves, 'not a TidemarkError: ...' otherwise). */
async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(() => '', (e: unknown) => (e instanceof TidemarkError ? e.code : `not a TidemarkError: ${String(e)}`));
}

t.test('a saved table loads back', async (t) => {
  const { file, hashes } = await table(t);
  t.strictSame(await loadHashTable(file, BS, SIZE), hashes);
});

t.test('a missing file is "none", not an error', async (t) => {
  const { file } = await table(t);
  t.equal(await readStateFile(`${file}.absent`, SPEC, BS, SIZE), null);
});

t.test('damage anywhere in the header or body is TM_ERR_STATE_CORRUPT', async (t) => {
  const { file, bytes } = await table(t);
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['truncated inside the header', bytes.subarray(0, 20)],
    ['wrong magic', Buffer.concat([Buffer.from('XXXX'), bytes.subarray(4)])],
    ['a flipped header byte', Buffer.from(bytes).fill(bytes[9]! ^ 1, 9, 10)],
    ['a flipped body byte', Buffer.from(bytes).fill(bytes[40]! ^ 1, 40, 41)],
    ['a truncated body', bytes.subarray(0, bytes.length - 8)],
  ];
  for (const [what, content] of cases) {
    await fsp.writeFile(file, content);
    t.equal(await codeOf(loadHashTable(file, BS, SIZE)), 'TM_ERR_STATE_CORRUPT', what);
  }
});

t.test('a newer format version is refused, even with a valid header crc', async (t) => {
  const { file, bytes } = await table(t);
  const newer = Buffer.from(bytes);
  newer.writeUInt16LE(2, 4);
  newer.writeUInt32LE(crc(newer.subarray(0, 28)), 28);
  await fsp.writeFile(file, newer);
  const err = await readStateFile(file, SPEC, BS, SIZE).then(() => null, (e: TidemarkError) => e);
  t.equal(err?.code, 'TM_ERR_STATE_CORRUPT');
  t.match(err?.message, /newer format version/);
});

t.test("another volume's geometry is TM_ERR_VOLUME_GEOMETRY", async (t) => {
  const { file } = await table(t);
  t.equal(await codeOf(loadHashTable(file, 512, SIZE)), 'TM_ERR_VOLUME_GEOMETRY', 'other block size');
  t.equal(await codeOf(loadHashTable(file, BS, SIZE * 2)), 'TM_ERR_VOLUME_GEOMETRY', 'other volume size');
});

t.test('a read failure other than "missing" is passed on, not taken as no file', async (t) => {
  const { file } = await table(t);
  await fsp.rm(file);
  await fsp.mkdir(file);
  const err = await readStateFile(file, SPEC, BS, SIZE).then(() => null, (e: NodeJS.ErrnoException) => e);
  t.equal(err?.code, 'EISDIR');
});
