// A persisted table of one 64-bit hash per block (the scan tracker's baseline, the master target's
// replica hashes). Layout in docs/FORMAT.md: 32-byte header with its own crc32c, then the hashes.
import { crc } from './checksum.js';
import { writeFileDurable } from './durable.js';
import { tmError } from './errors.js';
import { readStateFile } from './state-file.js';

const MAGIC = 0x48424d54; // "TMBH"
const VERSION = 1;
const HEADER = 32;

/** The table in `file`, or null if there is none. Damage or other geometry is an error. */
export async function loadHashTable(file: string, blockSize: number, sizeBytes: number): Promise<BigUint64Array | null> {
  const buf = await readStateFile(file, { magic: MAGIC, version: VERSION, headerCrcAt: 28 }, blockSize, sizeBytes);
  if (buf === null) return null;
  const count = Math.ceil(sizeBytes / blockSize);
  const body = buf.subarray(HEADER);
  if (body.length !== count * 8 || crc(body) !== buf.readUInt32LE(24)) throw tmError('TM_ERR_STATE_CORRUPT', `${file}: hash table damaged`, { path: file });
  const copy = Buffer.from(body); // aligned for the typed array
  return new BigUint64Array(copy.buffer, copy.byteOffset, count);
}

export async function saveHashTable(file: string, blockSize: number, sizeBytes: number, hashes: BigUint64Array): Promise<void> {
  const body = Buffer.from(hashes.buffer, hashes.byteOffset, hashes.byteLength);
  const head = Buffer.alloc(HEADER);
  head.writeUInt32LE(MAGIC, 0);
  head.writeUInt16LE(VERSION, 4);
  head.writeUInt32LE(blockSize, 8);
  head.writeBigUInt64LE(BigInt(sizeBytes), 16);
  head.writeUInt32LE(crc(body), 24);
  head.writeUInt32LE(crc(head.subarray(0, 28)), 28);
  await writeFileDurable(file, Buffer.concat([head, body]));
}
