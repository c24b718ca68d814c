// A persisted table of one 64-bit hash per block (the scan tracker's baseline, the master target's
// replica hashes). Layout in docs/FORMAT.md §3: a header with its own crc32c (32 bytes in version 1,
// 40 in version 2, which adds the sequence number the table reflects), then the hashes.
import { crc } from './checksum.js';
import { writeFileDurable } from './durable.js';
import { tmError } from './errors.js';
import { checkStateBuffer } from './state-file.js';
import { promises as fsp } from 'node:fs';

const MAGIC = 0x48424d54; // "TMBH"
const VERSION = 2;
/** Header size and where its crc sits, by version. */
const LAYOUT: Record<number, { header: number; crcAt: number }> = { 1: { header: 32, crcAt: 28 }, 2: { header: 40, crcAt: 36 } };

export interface LoadedHashTable {
  hashes: BigUint64Array;
  /** The sequence number whose application the table reflects; null in a version 1 file (not recorded). */
  seq: number | null;
}

/** The table in `file` with the sequence it reflects, or null if there is none. Damage or other geometry is an error. */
export async function loadHashTableAt(file: string, blockSize: number, sizeBytes: number): Promise<LoadedHashTable | null> {
  const raw = await fsp.readFile(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (raw === null) return null;
  const version = raw.length >= 6 ? raw.readUInt16LE(4) : 0;
  const layout = LAYOUT[version] ?? LAYOUT[VERSION]!; // a newer or garbled version is refused by the check below
  const buf = checkStateBuffer(file, raw, { magic: MAGIC, version: VERSION, headerCrcAt: layout.crcAt }, blockSize, sizeBytes);
  const count = Math.ceil(sizeBytes / blockSize);
  const body = buf.subarray(layout.header);
  if (body.length !== count * 8 || crc(body) !== buf.readUInt32LE(24)) throw tmError('TM_ERR_STATE_CORRUPT', `${file}: hash table damaged`, { path: file });
  const copy = Buffer.from(body); // aligned for the typed array
  return { hashes: new BigUint64Array(copy.buffer, copy.byteOffset, count), seq: version >= 2 ? Number(buf.readBigUInt64LE(28)) : null };
}

/** The table in `file`, or null if there is none. Damage or other geometry is an error. */
export async function loadHashTable(file: string, blockSize: number, sizeBytes: number): Promise<BigUint64Array | null> {
  return (await loadHashTableAt(file, blockSize, sizeBytes))?.hashes ?? null;
}

/** Write the table durably, recording that it reflects everything applied up to `seq` (0: not tracked). */
export async function saveHashTable(file: string, blockSize: number, sizeBytes: number, hashes: BigUint64Array, seq = 0): Promise<void> {
  const { header, crcAt } = LAYOUT[VERSION]!;
  const body = Buffer.from(hashes.buffer, hashes.byteOffset, hashes.byteLength);
  const head = Buffer.alloc(header);
  head.writeUInt32LE(MAGIC, 0);
  head.writeUInt16LE(VERSION, 4);
  head.writeUInt32LE(blockSize, 8);
  head.writeBigUInt64LE(BigInt(sizeBytes), 16);
  head.writeUInt32LE(crc(body), 24);
  head.writeBigUInt64LE(BigInt(seq), 28);
  head.writeUInt32LE(crc(head.subarray(0, crcAt)), crcAt);
  await writeFileDurable(file, Buffer.concat([head, body]));
}
