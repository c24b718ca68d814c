// A persisted table of one 64-bit hash per block (the scan tracker's baseline, the master target's
// replica hashes). Layout in docs/FORMAT.md: 32-byte header with its own crc32c, then the hashes.
import { promises as fsp } from 'node:fs';
import { crc } from './checksum.js';
import { writeFileDurable } from './durable.js';
import { tmError } from './errors.js';

const MAGIC = 0x48424d54; // "TMBH"
const VERSION = 1;
const HEADER = 32;

/** The table in `file`, or null if there is none. Damage or other geometry is an error. */
export async function loadHashTable(file: string, blockSize: number, sizeBytes: number): Promise<BigUint64Array | null> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || crc(buf.subarray(0, 28)) !== buf.readUInt32LE(28)) {
    throw tmError('TM_ERR_STATE_CORRUPT', `${file}: header damaged`, { path: file });
  }
  if (buf.readUInt16LE(4) > VERSION) throw tmError('TM_ERR_STATE_CORRUPT', `${file}: newer format version`, { path: file });
  if (buf.readUInt32LE(8) !== blockSize || Number(buf.readBigUInt64LE(16)) !== sizeBytes) {
    throw tmError('TM_ERR_VOLUME_GEOMETRY', `${file}: recorded geometry differs from the volume`, { path: file });
  }
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
