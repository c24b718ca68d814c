// Recover a point from the bucket alone, with no master target: read the manifest, pick the nearest base
// image at or after the point (its full base and incrementals) and the segments back to the point, fetch
// them with parallel ranged GETs, write each block from the newest image that holds it, then roll back
// with the segments' oldest before-images. Every chunk, index and segment is checked against the
// checksums the manifest and the objects record; the rolled-back ranges are read back and checked.
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../../common/checksum.js';
import { fsyncDir } from '../../common/durable.js';
import { tmError, wrap } from '../../common/errors.js';
import type { RecoveryPoint } from '../volume-state.js';
import { selectPoint, type PointSelector } from '../recover.js';
import { oldestImages } from '../retention/merge.js';
import { CHUNK_HEADER, checkChunkHeader, IMAGE_TRAILER, INDEX_ENTRY, parseIndex, type ChunkRef } from './image.js';
import { bucketPoints, decodeManifest, manifestKey, planFor, type BucketImage, type Manifest } from './manifest.js';
import type { BucketStore } from './store.js';

export async function readManifest(store: BucketStore, volumeId: string): Promise<Manifest> {
  await store.check();
  const key = manifestKey(volumeId);
  const buf = await store.get(key);
  if (!buf) throw tmError('TM_ERR_POINT_NOT_FOUND', `s3://${store.opts.bucket}/${store.key(key)} does not exist: no history of ${volumeId} under this prefix`, { volume: volumeId });
  const m = decodeManifest(buf, store.key(key));
  if (m.volumeId !== volumeId) throw tmError('TM_ERR_BUCKET_CORRUPT', `manifest ${store.key(key)} is for volume ${m.volumeId}`, { volume: volumeId });
  return m;
}

export async function listBucketPoints(store: BucketStore, volumeId: string): Promise<{ manifest: Manifest; points: RecoveryPoint[] }> {
  const manifest = await readManifest(store, volumeId);
  return { manifest, points: bucketPoints(manifest) };
}

export interface BucketRecoverResult {
  volume: string;
  point: RecoveryPoint;
  out: string;
  images: number;
  segments: number;
  downloadedBytes: number;
  requests: number;
  rolledBackBytes: number;
  ms: { images: number; rollback: number; verify: number; total: number };
}

/** At most `n` of `tasks` running at once; rejects with the first failure. */
export async function inParallel<T>(n: number, tasks: Array<() => Promise<T>>): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, tasks.length) }, worker));
  return out;
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, position + done)).bytesWritten;
}

/** Ranged GETs of about this many bytes: several chunks of an image in one request. */
const RANGE_BYTES = 8 << 20;

export async function recoverFromBucket(store: BucketStore, volumeId: string, sel: PointSelector, out: string, opts: { force?: boolean; concurrency?: number } = {}): Promise<BucketRecoverResult> {
  const started = Date.now();
  const conc = opts.concurrency ?? 8;
  const before = { ...store.requests };
  const { manifest: m, points } = await listBucketPoints(store, volumeId);
  const point = selectPoint(points, sel, volumeId);
  const plan = planFor(m, point)!;
  const st = await fsp.stat(out).catch(() => null);
  const isDevice = st?.isBlockDevice() ?? false;
  if (st && !isDevice && !opts.force) throw tmError('TM_ERR_USAGE', `${out} exists; give another --out, or --force to replace it`, { path: out });
  const target = isDevice ? out : `${out}.recovering.tmp`;
  const work = `${out}.segments.tmp`;
  await fsp.rm(work, { recursive: true, force: true });
  if (!isDevice) await fsp.rm(target, { force: true });
  const fh = await fsp.open(target, isDevice ? constants.O_RDWR | constants.O_EXCL : 'wx+', 0o600);
  try {
    if (!isDevice) await fh.truncate(m.sizeBytes);
    // Segments download while the images do.
    await fsp.mkdir(work, { recursive: true, mode: 0o700 });
    const segFiles = plan.segments.map((_s, i) => path.join(work, `${String(i).padStart(6, '0')}.tmrl`));
    const segDone = inParallel(Math.max(1, conc >> 1), plan.segments.map((s, i) => async () => {
      const body = await store.get(s.key);
      if (!body) throw tmError('TM_ERR_BUCKET_CORRUPT', `segment s3://${store.opts.bucket}/${store.key(s.key)} listed in the manifest is missing`, { key: s.key });
      if (body.length !== s.bytes || crc(body) !== s.crc32c) throw tmError('TM_ERR_BUCKET_CORRUPT', `segment ${store.key(s.key)} does not match the checksum the manifest records`, { key: s.key });
      await fsp.writeFile(segFiles[i]!, body);
    }));
    segDone.catch(() => {});
    await writeImages(store, m, plan.images, fh, conc);
    const imaged = Date.now();
    await segDone;
    // Roll back: each block's oldest before-image among the segments, then read back and checked.
    const written: Array<{ offset: number; length: number; crc32c: number }> = [];
    let rolledBackBytes = 0;
    for await (const img of oldestImages(segFiles, m.blockSize, m.sizeBytes)) {
      await writeAll(fh, img.data, img.offset);
      written.push({ offset: img.offset, length: img.data.length, crc32c: img.crc32c });
      rolledBackBytes += img.data.length;
    }
    await fh.sync();
    const rolled = Date.now();
    for (const w of written) {
      const back = Buffer.alloc(w.length);
      await fh.read(back, 0, w.length, w.offset);
      if (crc(back) !== w.crc32c) throw tmError('TM_ERR_RECOVERY_VERIFY', `recovered ${out} differs at ${w.offset} (+${w.length}) from the before-image recorded for point #${point.seq}`, { volume: volumeId, seq: point.seq });
    }
    await fh.close();
    if (!isDevice) {
      await fsp.rename(target, out);
      await fsyncDir(path.dirname(out));
    }
    const req = store.requests;
    return {
      volume: volumeId,
      point,
      out,
      images: plan.images.length,
      segments: plan.segments.length,
      downloadedBytes: req.bytesDown - before.bytesDown,
      requests: req.get + req.head - before.get - before.head,
      rolledBackBytes,
      ms: { images: imaged - started, rollback: rolled - imaged, verify: Date.now() - rolled, total: Date.now() - started },
    };
  } catch (e) {
    await fh.close().catch(() => {});
    if (!isDevice) await fsp.rm(target, { force: true });
    throw wrap(e, `recover ${volumeId} to point #${point.seq} from s3://${store.opts.bucket}/${store.opts.prefix}`, { volume: volumeId, seq: point.seq });
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/**
 * Write the images of a chain: every block from the newest image holding it. The indexes are read first
 * (one ranged GET each); then all the chunks that still supply a block are fetched in parallel, in ranged
 * GETs of several adjacent chunks.
 */
async function writeImages(store: BucketStore, m: Manifest, chain: BucketImage[], fh: fsp.FileHandle, conc: number): Promise<void> {
  const indexes = await inParallel(conc, chain.map((img) => async () => {
    const tail = await store.get(img.key, { start: img.indexOffset, end: img.indexOffset + img.chunks * INDEX_ENTRY + IMAGE_TRAILER });
    if (!tail) throw tmError('TM_ERR_BUCKET_CORRUPT', `image s3://${store.opts.bucket}/${store.key(img.key)} listed in the manifest is missing`, { key: img.key });
    return parseIndex(tail, img, store.key(img.key));
  }));
  const bs = m.blockSize;
  const claimed = new Uint8Array(Math.ceil(m.sizeBytes / bs));
  type Job = { img: BucketImage; refs: ChunkRef[] };
  const jobs: Job[] = [];
  // Newest first: a block goes to the newest image that holds it.
  for (let k = chain.length - 1; k >= 0; k--) {
    const useful: ChunkRef[] = [];
    for (const ref of indexes[k]!) {
      let any = false;
      for (let b = ref.volumeOffset / bs; b < Math.ceil((ref.volumeOffset + ref.length) / bs); b++) if (!claimed[b]) any = true;
      if (!any) continue;
      useful.push(ref);
      (ref as ChunkRef & { skip?: Uint8Array }).skip = claimed.slice(ref.volumeOffset / bs, Math.ceil((ref.volumeOffset + ref.length) / bs));
      for (let b = ref.volumeOffset / bs; b < Math.ceil((ref.volumeOffset + ref.length) / bs); b++) claimed[b] = 1;
    }
    // Adjacent chunks in the object go in one ranged GET.
    let cur: ChunkRef[] = [];
    const flush = (): void => {
      if (cur.length) jobs.push({ img: chain[k]!, refs: cur });
      cur = [];
    };
    for (const ref of useful) {
      const last = cur.at(-1);
      const contiguous = last && last.objectOffset + 20 + last.length === ref.objectOffset;
      const size = cur.length ? ref.objectOffset + 20 + ref.length - cur[0]!.objectOffset : 0;
      if (!contiguous || size > RANGE_BYTES) flush();
      cur.push(ref);
    }
    flush();
  }
  await inParallel(conc, jobs.map((job) => () => fetchAndWrite(store, job.img, job.refs, bs, fh)));
}

/** Writes gathered until this many bytes are waiting (or the next piece does not follow on). */
const WRITE_BATCH = 4 << 20;

/** One ranged GET of adjacent chunks of an image, written as it arrives (`writeChunkStream`). */
async function fetchAndWrite(store: BucketStore, img: BucketImage, refs: Array<ChunkRef & { skip?: Uint8Array }>, bs: number, fh: fsp.FileHandle): Promise<void> {
  const start = refs[0]!.objectOffset;
  const last = refs.at(-1)!;
  const body = await store.getStream(img.key, { start, end: last.objectOffset + CHUNK_HEADER + last.length });
  if (!body) throw tmError('TM_ERR_BUCKET_CORRUPT', `image s3://${store.opts.bucket}/${store.key(img.key)} listed in the manifest is missing`, { key: img.key });
  try {
    await writeChunkStream(body, refs, bs, fh, store.key(img.key), (n) => store.countDown(n));
  } finally {
    body.release?.(); // every piece written (writeChunkStream flushes before it returns or throws)
  }
}

/**
 * The bytes of adjacent chunks `refs` (header + data each, from refs[0]'s header on), consumed as they
 * arrive: each piece the socket delivers is checked (chunk header against the index, crc32c of the data
 * carried across pieces) and written where it belongs from the very buffer it came in (positional
 * writev, no gathering copy), in the same pass. Blocks a chunk's `skip` marks (a newer image holds them)
 * are not written. A mismatch throws TM_ERR_BUCKET_CORRUPT at the end of the chunk (the caller removes
 * the output), as does a body shorter or longer than the chunks.
 */
export async function writeChunkStream(body: AsyncIterable<Uint8Array>, refs: Array<ChunkRef & { skip?: Uint8Array }>, bs: number, fh: fsp.FileHandle, where: string, onBytes: (n: number) => void = () => {}): Promise<void> {
  const start = refs[0]!.objectOffset;
  const last = refs.at(-1)!;
  const end = last.objectOffset + CHUNK_HEADER + last.length;
  let batch: Buffer[] = [];
  let batchAt = 0;
  let batchBytes = 0;
  const flush = async (): Promise<void> => {
    if (batchBytes === 0) return;
    const done = (await fh.writev(batch, batchAt)).bytesWritten;
    if (done < batchBytes) await writeAll(fh, Buffer.concat(batch).subarray(done), batchAt + done); // short write: rare
    batch = [];
    batchBytes = 0;
  };
  const write = async (piece: Buffer, at: number): Promise<void> => {
    if (batchBytes > 0 && batchAt + batchBytes !== at) await flush();
    if (batchBytes === 0) batchAt = at;
    batch.push(piece);
    batchBytes += piece.length;
    if (batchBytes >= WRITE_BATCH) await flush();
  };
  let i = 0; // chunk being read
  const header = Buffer.alloc(CHUNK_HEADER);
  let inHeader = 0; // header bytes read of chunk i
  let inData = 0; // data bytes read of chunk i
  let sum = 0; // crc32c of those
  let got = 0;
  for await (const u8 of body) {
    const piece = Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
    got += piece.length;
    onBytes(piece.length);
    for (let p = 0; p < piece.length;) {
      const ref = refs[i];
      if (!ref) throw tmError('TM_ERR_BUCKET_CORRUPT', `image ${where}: the store sent more than the ${end - start} bytes asked for at ${start}`, { key: where });
      if (inHeader < CHUNK_HEADER) {
        const n = Math.min(CHUNK_HEADER - inHeader, piece.length - p);
        piece.copy(header, inHeader, p, p + n);
        inHeader += n;
        p += n;
        if (inHeader === CHUNK_HEADER) checkChunkHeader(header, ref, where);
        continue;
      }
      const n = Math.min(ref.length - inData, piece.length - p);
      const data = piece.subarray(p, p + n);
      sum = crc(data, sum);
      // Write the runs of blocks no newer image claimed.
      const skip = ref.skip!;
      for (let o = 0; o < n;) {
        let b = Math.floor((inData + o) / bs);
        const claimed = skip[b];
        while (b + 1 < skip.length && (b + 1) * bs < inData + n && skip[b + 1] === claimed) b++;
        const runEnd = Math.min((b + 1) * bs - inData, n);
        if (!claimed) await write(data.subarray(o, runEnd), ref.volumeOffset + inData + o);
        o = runEnd;
      }
      inData += n;
      p += n;
      if (inData === ref.length) {
        if (sum !== ref.crc32c) throw tmError('TM_ERR_BUCKET_CORRUPT', `image ${where} chunk at volume offset ${ref.volumeOffset}: data checksum mismatch`, { key: where, offset: ref.volumeOffset });
        i++;
        inHeader = 0;
        inData = 0;
        sum = 0;
      }
    }
  }
  await flush();
  if (got !== end - start) throw tmError('TM_ERR_BUCKET_CORRUPT', `image ${where}: asked for ${end - start} bytes at ${start}, got ${got}`, { key: where });
}
