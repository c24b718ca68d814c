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

export interface BuiltImage extends ImageLayout {
  file: string;
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
 * Where an image's bytes go, in order: a multipart upload (BucketStore.multipart: the bytes are read from
 * the replica straight into the part buffers) or a file. `room(n)` lends buffers for the next n bytes
 * (possibly spanning parts); `commit(n)` makes the first n of them the object's next bytes.
 */
export interface ImageSink {
  room(n: number): Buffer[];
  commit(n: number): Promise<void>;
}

export interface ImageLayout {
  bytes: number;
  dataBytes: number;
  chunks: number;
  indexOffset: number;
  indexCrc32c: number;
}

/** [first n bytes, the rest] of a list of buffers, as views. */
function splitViews(bufs: Buffer[], n: number): [Buffer[], Buffer[]] {
  const a: Buffer[] = [];
  const b: Buffer[] = [];
  for (const x of bufs) {
    if (n >= x.length) a.push(x);
    else if (n <= 0) b.push(x);
    else {
      a.push(x.subarray(0, n));
      b.push(x.subarray(n));
    }
    n -= x.length;
  }
  return [a, b];
}

function copyInto(src: Buffer, dst: Buffer[]): void {
  let at = 0;
  for (const d of dst) at += src.copy(d, 0, at);
}

/** Positional read into `bufs`; past the end of the file they are zeros. */
async function readvAt(fh: fsp.FileHandle, bufs: Buffer[], position: number): Promise<void> {
  let left = bufs.filter((b) => b.length > 0);
  while (left.length) {
    const { bytesRead } = await fh.readv(left, position);
    if (bytesRead === 0) {
      for (const b of left) b.fill(0);
      return;
    }
    position += bytesRead;
    left = splitViews(left, bytesRead)[1];
  }
}

const ZERO = Buffer.alloc(CHUNK_BYTES);

/**
 * Write an image of `replicaPath` to `sink`: the given ranges (incremental), or every non-zero chunk
 * (full, `ranges` null). Each chunk is read into the sink's own buffers, checksummed there and left out
 * again if it is all zeros (full images), so its bytes are copied by no one before they are sent.
 */
export async function writeImage(replicaPath: string, header: ImageHeader, ranges: Array<{ offset: number; length: number }> | null, sink: ImageSink): Promise<ImageLayout> {
  const src = await fsp.open(replicaPath, 'r');
  let pos = 0;
  const put = async (b: Buffer): Promise<void> => {
    copyInto(b, sink.room(b.length));
    await sink.commit(b.length);
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
    const all = ranges ?? Array.from({ length: Math.ceil(header.sizeBytes / CHUNK_BYTES) }, (_, i) => ({ offset: i * CHUNK_BYTES, length: Math.min(CHUNK_BYTES, header.sizeBytes - i * CHUNK_BYTES) }));
    const h = Buffer.alloc(CHUNK_HEADER);
    for (const r of all) {
      const [hdr, data] = splitViews(sink.room(CHUNK_HEADER + r.length), CHUNK_HEADER);
      await readvAt(src, data, r.offset);
      if (!ranges) {
        let seen = 0;
        if (data.every((d) => d.equals(ZERO.subarray(seen, (seen += d.length))))) continue; // a full image leaves zeros out
      }
      let c = 0;
      for (const d of data) c = crc(d, c);
      h.writeBigUInt64LE(BigInt(r.offset), 0);
      h.writeUInt32LE(r.length, 8);
      h.writeUInt32LE(c, 12);
      h.writeUInt32LE(crc(h.subarray(0, 16)), 16);
      copyInto(h, hdr);
      refs.push({ objectOffset: pos, volumeOffset: r.offset, length: r.length, crc32c: c });
      await sink.commit(CHUNK_HEADER + r.length);
      pos += CHUNK_HEADER + r.length;
      dataBytes += r.length;
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
    return { bytes: pos, dataBytes, chunks: refs.length, indexOffset, indexCrc32c };
  } finally {
    await src.close();
  }
}

/** An image written to a file (tests, tools): `writeImage` through a buffer of one chunk. */
export async function buildImage(replicaPath: string, file: string, header: ImageHeader, ranges: Array<{ offset: number; length: number }> | null): Promise<BuiltImage> {
  const out = await fsp.open(file, 'w', 0o600);
  let scratch = Buffer.alloc(CHUNK_BYTES + CHUNK_HEADER);
  let at = 0;
  try {
    const layout = await writeImage(replicaPath, header, ranges, {
      room: (n) => {
        if (n > scratch.length) scratch = Buffer.alloc(n);
        return [scratch.subarray(0, n)];
      },
      commit: async (n) => {
        for (let done = 0; done < n;) done += (await out.write(scratch, done, n - done, at + done)).bytesWritten;
        at += n;
      },
    });
    return { file, ...layout };
  } finally {
    await out.close();
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
