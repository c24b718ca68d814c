// The checks every binary state file of ours makes before its body is trusted (hash tables, dirty maps):
// magic, a crc32c of the header stored at the header's end, a version we can read, and the volume geometry
// (block size at offset 8, volume size at 16) of the volume it belongs to. Layouts in docs/FORMAT.md.
import { promises as fsp } from 'node:fs';
import { crc } from './checksum.js';
import { tmError } from './errors.js';

export interface StateFileSpec {
  magic: number;
  version: number;
  /** Where the header's own crc32c sits; it covers every byte before it. */
  headerCrcAt: number;
}

/** The whole file once its header checks out; null if there is none. Damage or other geometry is an error. */
export async function readStateFile(file: string, spec: StateFileSpec, blockSize: number, sizeBytes: number): Promise<Buffer | null> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return checkStateBuffer(file, buf, spec, blockSize, sizeBytes);
}

/** The checks of readStateFile on a file already read. Returns `buf`. */
export function checkStateBuffer(file: string, buf: Buffer, spec: StateFileSpec, blockSize: number, sizeBytes: number): Buffer {
  const at = spec.headerCrcAt;
  // The version before the header crc: a newer version may place its crc elsewhere.
  if (buf.length >= 8 && buf.readUInt32LE(0) === spec.magic && buf.readUInt16LE(4) > spec.version) {
    throw tmError('TM_ERR_STATE_CORRUPT', `${file}: newer format version ${buf.readUInt16LE(4)} (this Tidemark reads up to ${spec.version})`, { path: file });
  }
  if (buf.length < at + 4 || buf.readUInt32LE(0) !== spec.magic || crc(buf.subarray(0, at)) !== buf.readUInt32LE(at)) {
    throw tmError('TM_ERR_STATE_CORRUPT', `${file}: header damaged`, { path: file });
  }
  if (buf.readUInt32LE(8) !== blockSize || Number(buf.readBigUInt64LE(16)) !== sizeBytes) {
    throw tmError('TM_ERR_VOLUME_GEOMETRY', `${file}: recorded geometry differs from the volume`, { path: file });
  }
  return buf;
}
