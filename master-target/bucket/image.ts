// A base image of the replica for the bucket (.tmbi): chunks of replica data, each with its volume offset
// and crc32c, then an index of the chunks, so a reader fetches the index with one ranged GET and the
// chunks with parallel ranged GETs. A full image holds every non-zero chunk (absent = zeros); an
// incremental one holds the blocks changed since its parent. Byte layout in docs/FORMAT.md §12.
//
// The image is read from the live replica while differentials go on being applied ("fuzzy"): a block a
// differential in seq+1..needsSeq wrote may be caught before or after that write. Their retention
// segments (durable before each write) put every such block back, so image + segments through needsSeq
// is exactly the replica at seq, and at any earlier point the segments reach.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { crc } from '../../common/checksum.js';
import { tmError } from '../../common/errors.js';

export const IMAGE_MAGIC = 0x49424d54; // "TMBI"
export const IMAGE_END_MAGIC = 0x45424d54; // "TMBE"
export const IMAGE_VERSION = 1;
const PREFIX = 12;
export const CHUNK_HEADER = 20;
export const INDEX_ENTRY = 24;
export const IMAGE_TRAILER = 24;
export const CHUNK_BYTES = 4 << 20;

export interface ImageHeader {
  volumeId: string;
  id: number;
  kind: 'full' | 'incremental';
  seq: number;
  parentId: number | null;
  sizeBytes: number;
  blockSize: number;
  createdAt: number;
}

export interface ChunkRef {
  /** Where the chunk's 20-byte header starts in the object. */
  objectOffset: number;
  volumeOffset: number;
  length: number;
  crc32c: number;
}

export interface BuiltImage {
  file: string;
  bytes: number;
  dataBytes: number;
  chunks: number;
  indexOffset: number;
  indexCrc32c: number;
  /** MD5 of each `partSize` piece of the file, computed as it was written (the upload's expected ETag). */
  partMd5s: Buffer[];
}

async function readAt(fh: fsp.FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length); // zeros past the end
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf;
}

/** Runs of blocks as [offset, length) ranges of at most CHUNK_BYTES. */
export function blockRuns(blocks: Iterable<number>, blockSize: number, sizeBytes: number): Array<{ offset: number; length: number }> {
  const sorted = [...blocks].sort((a, b) => a - b);
  const out: Array<{ offset: number; length: number }> = [];
  const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / blockSize));
  for (let i = 0; i < sorted.length;) {
    let j = i + 1;
    while (j < sorted.length && sorted[j] === sorted[j - 1]! + 1 && j - i < perChunk) j++;
    const offset = sorted[i]! * blockSize;
    out.push({ offset, length: Math.min((sorted[j - 1]! + 1) * blockSize, sizeBytes) - offset });
    i = j;
  }
  return out;
}

/**
 * Write an image of `replicaPath` into `file`: the given ranges (incremental), or every non-zero chunk
 * (full, `ranges` null). Returns its layout; `md5s` are the MD5s of each `partSize` piece (for the ETag).
 */
export async function buildImage(replicaPath: string, file: string, header: ImageHeader, ranges: Array<{ offset: number; length: number }> | null, partSize = 8 << 20): Promise<BuiltImage> {
  const src = await fsp.open(replicaPath, 'r');
  const out = await fsp.open(file, 'w', 0o600);
  let pos = 0;
  const partMd5s: Buffer[] = [];
  let md5 = createHash('md5');
  let inPart = 0;
  const put = async (b: Buffer): Promise<void> => {
    for (let at = 0; at < b.length;) {
      const n = Math.min(b.length - at, partSize - inPart);
      md5.update(b.subarray(at, at + n));
      at += n;
      inPart += n;
      if (inPart === partSize) {
        partMd5s.push(md5.digest());
        md5 = createHash('md5');
        inPart = 0;
      }
    }
    let done = 0;
    while (done < b.length) done += (await out.write(b, done, b.length - done, pos + done)).bytesWritten;
    pos += b.length;
  };
  try {
    const json = Buffer.from(JSON.stringify(header));
    const head = Buffer.alloc(PREFIX + json.length + 4);
    head.writeUInt32LE(IMAGE_MAGIC, 0);
    head.writeUInt16LE(IMAGE_VERSION, 4);
    head.writeUInt32LE(json.length, 8);
    json.copy(head, PREFIX);
    head.writeUInt32LE(crc(head.subarray(0, PREFIX + json.length)), PREFIX + json.length);
    await put(head);
    const refs: ChunkRef[] = [];
    let dataBytes = 0;
    const zero = Buffer.alloc(CHUNK_BYTES);
    const all = ranges ?? Array.from({ length: Math.ceil(header.sizeBytes / CHUNK_BYTES) }, (_, i) => ({ offset: i * CHUNK_BYTES, length: Math.min(CHUNK_BYTES, header.sizeBytes - i * CHUNK_BYTES) }));
    for (const r of all) {
      const data = await readAt(src, r.length, r.offset);
      if (!ranges && data.equals(zero.subarray(0, data.length))) continue; // a full image leaves zeros out
      const h = Buffer.alloc(CHUNK_HEADER);
      const c = crc(data);
      h.writeBigUInt64LE(BigInt(r.offset), 0);
      h.writeUInt32LE(data.length, 8);
      h.writeUInt32LE(c, 12);
      h.writeUInt32LE(crc(h.subarray(0, 16)), 16);
      refs.push({ objectOffset: pos, volumeOffset: r.offset, length: data.length, crc32c: c });
      await put(h);
      await put(data);
      dataBytes += data.length;
    }
    const indexOffset = pos;
    const index = Buffer.alloc(refs.length * INDEX_ENTRY);
    refs.forEach((r, i) => {
      index.writeBigUInt64LE(BigInt(r.objectOffset), i * INDEX_ENTRY);
      index.writeBigUInt64LE(BigInt(r.volumeOffset), i * INDEX_ENTRY + 8);
      index.writeUInt32LE(r.length, i * INDEX_ENTRY + 16);
      index.writeUInt32LE(r.crc32c, i * INDEX_ENTRY + 20);
    });
    const indexCrc32c = crc(index);
    const t = Buffer.alloc(IMAGE_TRAILER);
    t.writeUInt32LE(IMAGE_END_MAGIC, 0);
    t.writeUInt32LE(refs.length, 4);
    t.writeBigUInt64LE(BigInt(indexOffset), 8);
    t.writeUInt32LE(indexCrc32c, 16);
    t.writeUInt32LE(crc(t.subarray(0, 20)), 20);
    await put(index);
    await put(t);
    if (inPart > 0) partMd5s.push(md5.digest());
    // No fsync: a scratch file for the upload only (a crash removes it at the next start).
    return { file, bytes: pos, dataBytes, chunks: refs.length, indexOffset, indexCrc32c, partMd5s };
  } finally {
    await out.close();
    await src.close();
  }
}

/** The chunk list from the object's tail (index + trailer), checked against the manifest's record. */
export function parseIndex(tail: Buffer, expected: { indexCrc32c: number; chunks: number; indexOffset: number }, where: string): ChunkRef[] {
  const bad = (why: string): Error => tmError('TM_ERR_BUCKET_CORRUPT', `image ${where}: ${why}`, { key: where });
  if (tail.length !== expected.chunks * INDEX_ENTRY + IMAGE_TRAILER) throw bad(`index is ${tail.length} bytes, expected ${expected.chunks * INDEX_ENTRY + IMAGE_TRAILER}`);
  const t = tail.subarray(tail.length - IMAGE_TRAILER);
  if (t.readUInt32LE(0) !== IMAGE_END_MAGIC || crc(t.subarray(0, 20)) !== t.readUInt32LE(20)) throw bad('trailer damaged');
  if (t.readUInt32LE(4) !== expected.chunks || Number(t.readBigUInt64LE(8)) !== expected.indexOffset) throw bad('trailer disagrees with the manifest');
  const index = tail.subarray(0, tail.length - IMAGE_TRAILER);
  if (crc(index) !== expected.indexCrc32c || t.readUInt32LE(16) !== expected.indexCrc32c) throw bad('index checksum mismatch');
  const refs: ChunkRef[] = [];
  for (let i = 0; i < expected.chunks; i++) {
    const o = i * INDEX_ENTRY;
    refs.push({ objectOffset: Number(index.readBigUInt64LE(o)), volumeOffset: Number(index.readBigUInt64LE(o + 8)), length: index.readUInt32LE(o + 16), crc32c: index.readUInt32LE(o + 20) });
  }
  return refs;
}

/** A chunk's 20-byte header, checked on its own and against the index entry. */
export function checkChunkHeader(h: Buffer, ref: ChunkRef, where: string): void {
  const bad = (why: string): Error => tmError('TM_ERR_BUCKET_CORRUPT', `image ${where} chunk at volume offset ${ref.volumeOffset}: ${why}`, { key: where, offset: ref.volumeOffset });
  if (crc(h.subarray(0, 16)) !== h.readUInt32LE(16)) throw bad('chunk header damaged');
  if (Number(h.readBigUInt64LE(0)) !== ref.volumeOffset || h.readUInt32LE(8) !== ref.length || h.readUInt32LE(12) !== ref.crc32c) throw bad('chunk header disagrees with the index');
}

export function md5hex(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}
