// The per-volume manifest in the bucket (`<prefix>/<volume>/manifest.tmsm`): the only object the tier
// reads to know what the bucket holds, so the steady state makes no LIST request. An object is listed
// here only after it was uploaded and its ETag confirmed, so a torn upload is never a point. One PUT
// replaces it whole (S3 PUTs are atomic). Byte layout in docs/FORMAT.md §11.
import { crc } from '../../common/checksum.js';
import { tmError } from '../../common/errors.js';
import type { RecoveryPoint } from '../volume-state.js';

export const MANIFEST_MAGIC = 0x4d534d54; // "TMSM"
/** Highest version read. Version 2 adds the expiry fields (pendingDeletes, floorSeq, images[].point); a
 * manifest that uses none of them is still written as version 1, so older readers go on reading it. */
export const MANIFEST_VERSION = 2;
const PREFIX = 12;

export const manifestKey = (volumeId: string): string => `${volumeId}/manifest.tmsm`;
export const segmentKey = (volumeId: string, fromSeq: number, toSeq: number): string => `${volumeId}/segments/${String(fromSeq).padStart(10, '0')}-${String(toSeq).padStart(10, '0')}.tmrl`;
export const imageKey = (volumeId: string, id: number, seq: number): string => `${volumeId}/images/${String(id).padStart(8, '0')}-${String(seq).padStart(10, '0')}.tmbi`;

/** A retention segment in the bucket: the local .tmrl file, byte for byte. */
export interface BucketSegment {
  key: string;
  fromSeq: number;
  toSeq: number;
  bytes: number;
  /** crc32c of the whole object. */
  crc32c: number;
  base: RecoveryPoint | null;
  tip: RecoveryPoint | null;
  uploadedAt: number;
}

/** A base image: the replica read while differentials `seq + 1 .. needsSeq` were applied (docs/FORMAT.md §12). */
export interface BucketImage {
  key: string;
  id: number;
  kind: 'full' | 'incremental';
  /** The image (with the segments after it) gives any point at or before `seq`. */
  seq: number;
  /** Segments through this sequence must be applied over it (it was read while they were being applied). */
  needsSeq: number;
  /** The image this one's blocks go over (incremental), or null (full). */
  parentId: number | null;
  bytes: number;
  dataBytes: number;
  chunks: number;
  indexOffset: number;
  indexCrc32c: number;
  uploadedAt: number;
  /** The recovery point the replica was at `seq`, if it was one (v2): listed even once no segment names it. */
  point?: RecoveryPoint | null;
}

export interface Manifest {
  version: number;
  volumeId: string;
  sizeBytes: number;
  blockSize: number;
  /** Incremented at every write: a reader sees which manifest it used. */
  generation: number;
  updatedAt: number;
  nextImageId: number;
  segments: BucketSegment[];
  images: BucketImage[];
  /**
   * (v2) Keys no entry lists that must be deleted: objects being uploaded before the manifest lists them
   * (so a crash never leaks them) and objects expiry unlisted (deleted after the manifest stopped naming them).
   */
  pendingDeletes?: string[];
  /** (v2) Expiry removed every point before this sequence; uploads go on after max(segments' toSeq, floorSeq). */
  floorSeq?: number;
}

/** Does the manifest use a version-2 field? */
function needsV2(m: Manifest): boolean {
  return (m.pendingDeletes?.length ?? 0) > 0 || (m.floorSeq ?? 0) > 0 || m.images.some((i) => i.point != null);
}

/** Newest sequence the bucket's segments (or expiry) reached: the next segment starts after it. */
export function uploadedThrough(m: Manifest): number {
  return m.segments.reduce((n, s) => Math.max(n, s.toSeq), m.floorSeq ?? 0);
}

/** Every key the manifest lists (segments and images). */
export function listedKeys(m: Manifest): Set<string> {
  return new Set([...m.segments.map((s) => s.key), ...m.images.map((i) => i.key)]);
}

export function emptyManifest(volumeId: string, sizeBytes: number, blockSize: number): Manifest {
  return { version: 1, volumeId, sizeBytes, blockSize, generation: 0, updatedAt: 0, nextImageId: 1, segments: [], images: [] };
}

export function encodeManifest(m: Manifest): Buffer {
  const version = needsV2(m) ? 2 : 1;
  const json = Buffer.from(JSON.stringify({ ...m, version }));
  const out = Buffer.alloc(PREFIX + json.length + 4);
  out.writeUInt32LE(MANIFEST_MAGIC, 0);
  out.writeUInt16LE(version, 4);
  out.writeUInt32LE(json.length, 8);
  json.copy(out, PREFIX);
  out.writeUInt32LE(crc(out.subarray(0, PREFIX + json.length)), PREFIX + json.length);
  return out;
}

export function decodeManifest(buf: Buffer, where: string): Manifest {
  const bad = (why: string): Error => tmError('TM_ERR_BUCKET_CORRUPT', `manifest ${where}: ${why}`, { key: where });
  if (buf.length < PREFIX + 4 || buf.readUInt32LE(0) !== MANIFEST_MAGIC) throw bad('not a Tidemark manifest (bad magic)');
  const version = buf.readUInt16LE(4);
  if (version > MANIFEST_VERSION) throw tmError('TM_ERR_BUCKET_VERSION', `manifest ${where} is format version ${version}; this Tidemark reads up to ${MANIFEST_VERSION}: upgrade it`, { key: where });
  const len = buf.readUInt32LE(8);
  if (PREFIX + len + 4 !== buf.length) throw bad(`length ${buf.length} does not match its header (${PREFIX + len + 4})`);
  if (crc(buf.subarray(0, PREFIX + len)) !== buf.readUInt32LE(PREFIX + len)) throw bad('checksum mismatch');
  const m = JSON.parse(buf.subarray(PREFIX, PREFIX + len).toString('utf8')) as Manifest;
  m.version = version;
  return m;
}

/** The images that make image `id`: its full base first, then each incremental up to it. */
export function imageChain(m: Manifest, id: number): BucketImage[] | null {
  const chain: BucketImage[] = [];
  let cur = m.images.find((i) => i.id === id);
  while (cur) {
    chain.unshift(cur);
    if (cur.kind === 'full') return chain;
    const parent = cur.parentId;
    cur = m.images.find((i) => i.id === parent);
  }
  return null;
}

/** The segments that take the bucket's image at `needsSeq` back to point `seq`, unbroken, or null. */
export function segmentsBetween(m: Manifest, seq: number, needsSeq: number): BucketSegment[] | null {
  const out: BucketSegment[] = [];
  let next = seq + 1;
  for (const s of [...m.segments].sort((a, b) => a.fromSeq - b.fromSeq)) {
    if (next > needsSeq) break;
    if (s.toSeq < next) continue;
    if (s.fromSeq !== next) return null;
    out.push(s);
    next = s.toSeq + 1;
  }
  return next > needsSeq ? out : null;
}

export interface PointPlan {
  point: RecoveryPoint;
  images: BucketImage[];
  segments: BucketSegment[];
}

/** How to rebuild `point` from the bucket: the nearest image at or after it and the segments back to it. */
export function planFor(m: Manifest, point: RecoveryPoint): PointPlan | null {
  for (const img of [...m.images].sort((a, b) => a.seq - b.seq)) {
    if (img.seq < point.seq) continue;
    const images = imageChain(m, img.id);
    const segments = segmentsBetween(m, point.seq, img.needsSeq);
    if (images && segments) return { point, images, segments };
  }
  return null;
}

/** Every point the bucket alone can rebuild, oldest first. */
export function bucketPoints(m: Manifest): RecoveryPoint[] {
  const bySeq = new Map<number, RecoveryPoint>();
  for (const s of m.segments) {
    if (s.base) bySeq.set(s.base.seq, s.base);
    if (s.tip) bySeq.set(s.tip.seq, s.tip);
  }
  for (const i of m.images) if (i.point) bySeq.set(i.point.seq, i.point);
  const floor = m.floorSeq ?? 0;
  return [...bySeq.values()].filter((p) => p.seq >= floor && planFor(m, p) !== null).sort((a, b) => a.seq - b.seq);
}
