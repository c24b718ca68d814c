// Recover a retained point: clone the replica (reflink where the filesystem allows, else copy), then write
// onto the clone the oldest before-image of every block changed since the point. On reflink the time grows
// with what changed since the point, not with the volume's size. The output is verified: every rolled-back
// range is read back and checked against the checksum recorded when its before-image was taken, and with
// `verify: 'full'` every block is checked against the point's block hashes (the replica's recorded hashes
// with the before-images' hashes in place of the blocks rolled back).
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsyncDir } from '../common/durable.js';
import { blockHash, crc } from '../common/checksum.js';
import { didYouMean } from '../common/config.js';
import { volumeSize } from '../common/device.js';
import { TidemarkError, tmError, wrap } from '../common/errors.js';
import { ficlone } from '../native/index.js';
import type { RecoveryPoint } from './volume-state.js';
import { oldestImages } from './retention/merge.js';
import type { RetentionLog, SegmentInfo } from './retention/retention-log.js';

export interface PointSelector {
  seq?: number;
  /** Newest point captured at or before this instant (ms since the epoch). */
  atMs?: number;
  tag?: string;
  latest?: boolean;
}

export interface RecoverOptions {
  select: PointSelector;
  /** A file (created; refused if it exists, unless `force`) or a block device at least the volume's size. */
  out: string;
  force?: boolean;
  /** Copy even where a reflink clone is possible (to measure the copy path). */
  copy?: boolean;
  verify?: 'changed' | 'full';
  /** Told as the work goes: the phase, bytes done and the phase's total (for `tidemark recover`'s progress). */
  progress?: (p: RecoverProgress) => void;
}

export interface RecoverProgress {
  phase: 'copy' | 'rollback' | 'verify';
  doneBytes: number;
  totalBytes: number;
}

/** What recovery needs from the master target's volume; `hold` keeps the applier still while it runs. */
export interface RecoverySource {
  volumeId: string;
  replicaPath: string;
  sizeBytes: number;
  blockSize: number;
  retention: RetentionLog;
  doneSeq(): number;
  currentPoint(): RecoveryPoint | null;
  hashes(): BigUint64Array | null;
  hold<T>(fn: () => Promise<T>): Promise<T>;
}

export interface RecoverResult {
  volume: string;
  point: RecoveryPoint;
  out: string;
  method: 'reflink' | 'copy';
  /** The replica's sequence the clone was taken at. */
  fromSeq: number;
  segments: number;
  rolledBackBytes: number;
  verified: 'changed' | 'full';
  ms: { clone: number; rollback: number; verify: number; total: number };
}

function formatPoint(p: RecoveryPoint): string {
  return `#${p.seq} (${new Date(p.atMs).toISOString()}${p.tags.length ? ` ${p.tags.join(',')}` : ''})`;
}

/** The point a selector names, or a clear error saying what is retained. */
export function selectPoint(points: readonly RecoveryPoint[], sel: PointSelector, volumeId: string): RecoveryPoint {
  const none = (why: string): TidemarkError => {
    const span = points.length ? `retained: ${points.length} points from ${formatPoint(points[0]!)} to ${formatPoint(points.at(-1)!)}` : 'no point is retained yet';
    return tmError('TM_ERR_POINT_NOT_FOUND', `${volumeId}: ${why}; ${span}`, { volume: volumeId });
  };
  const given = [sel.seq !== undefined, sel.atMs !== undefined, sel.tag !== undefined, sel.latest === true].filter(Boolean).length;
  if (given !== 1) throw tmError('TM_ERR_USAGE', 'name exactly one point: --seq <n>, --at <time>, --tag <name> or --latest');
  let found: RecoveryPoint | undefined;
  if (sel.latest) found = points.at(-1);
  else if (sel.seq !== undefined) {
    found = points.find((p) => p.seq === sel.seq);
    if (!found) {
      const near = [...points].sort((a, b) => Math.abs(a.seq - sel.seq!) - Math.abs(b.seq - sel.seq!)).slice(0, 2).sort((a, b) => a.seq - b.seq);
      throw none(`no retained point #${sel.seq} (it was never a recovery point, or thinning or the window removed it)${near.length ? `; nearest: ${near.map(formatPoint).join(', ')}` : ''}`);
    }
  } else if (sel.atMs !== undefined) {
    // In sequence order: the last point before the first one captured after T. With capture times that are
    // not monotonic (a source clock stepped back, before the master target made them so) a later point with
    // an early time must not be taken for one from before T.
    const bySeq = [...points].sort((a, b) => a.seq - b.seq);
    const after = bySeq.findIndex((p) => p.atMs > sel.atMs!);
    found = (after < 0 ? bySeq : bySeq.slice(0, after)).at(-1);
    if (!found) throw none(`no retained point at or before ${new Date(sel.atMs).toISOString()}`);
  } else {
    found = points.filter((p) => p.tags.includes(sel.tag!)).at(-1);
    if (!found) throw none(`no retained point tagged "${sel.tag}"; ${didYouMean(sel.tag!, [...new Set(points.flatMap((p) => p.tags))])}`);
  }
  if (!found) throw none('nothing to recover');
  return found;
}

const CHUNK = 4 * 1024 * 1024;

async function writeAll(fh: fsp.FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, position + done)).bytesWritten;
}

/** `length` bytes at `position` (zeros past the end), into `into` when given. */
async function readAll(fh: fsp.FileHandle, length: number, position: number, into?: Buffer): Promise<Buffer> {
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  buf.fill(0, done);
  return buf;
}

const ZEROS = Buffer.alloc(CHUNK);

/** Copy `size` bytes; into a new file, all-zero chunks are left as holes (the file was truncated to size). */
async function copyVolume(from: string, to: fsp.FileHandle, size: number, sparse: boolean, told?: (done: number) => void): Promise<void> {
  const src = await fsp.open(from, 'r');
  const buf = Buffer.allocUnsafe(CHUNK);
  try {
    for (let pos = 0; pos < size; pos += CHUNK) {
      const n = Math.min(CHUNK, size - pos);
      const chunk = await readAll(src, n, pos, buf);
      told?.(pos + n);
      if (sparse && chunk.equals(ZEROS.subarray(0, chunk.length))) continue;
      await writeAll(to, chunk, pos);
    }
  } finally {
    await src.close();
  }
}

/** A reflink clone of the replica into `target` (a new file); false where the filesystem cannot clone. */
async function tryReflink(src: RecoverySource, target: string): Promise<boolean> {
  try {
    await ficlone(src.replicaPath, target);
    return true;
  } catch (e) {
    if ((e as TidemarkError).code !== 'TM_ERR_UNSUPPORTED') throw e;
    await fsp.rm(target, { force: true });
    return false;
  }
}

/** A copy of the replica into `target`: a new sparse file, or a device. */
async function copyReplica(src: RecoverySource, target: string, isDevice: boolean, told?: (done: number) => void): Promise<void> {
  // O_EXCL on a device: refused (EBUSY) while it is mounted or otherwise claimed, and nobody can mount it meanwhile.
  const fh = await fsp.open(target, isDevice ? constants.O_WRONLY | constants.O_EXCL : 'wx', 0o600);
  try {
    if (!isDevice) await fh.truncate(src.sizeBytes);
    await copyVolume(src.replicaPath, fh, src.sizeBytes, !isDevice, told);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function outputKind(out: string, sizeBytes: number, force: boolean): Promise<{ isDevice: boolean }> {
  const st = await fsp.stat(out).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(e)));
  if (st?.isBlockDevice()) {
    const size = await volumeSize(out);
    if (size < sizeBytes) throw tmError('TM_ERR_VOLUME_GEOMETRY', `${out} holds ${size} bytes; the volume has ${sizeBytes}`, { path: out });
    return { isDevice: true };
  }
  if (st && !force) throw tmError('TM_ERR_USAGE', `${out} exists; give another --out, or --force to replace it`, { path: out });
  if (st && !st.isFile()) throw tmError('TM_ERR_USAGE', `${out} is neither a file nor a block device`, { path: out });
  return { isDevice: false };
}

export async function recoverPoint(src: RecoverySource, opts: RecoverOptions): Promise<RecoverResult> {
  const started = Date.now();
  const verify = opts.verify ?? 'changed';
  const { isDevice } = await outputKind(opts.out, src.sizeBytes, opts.force ?? false);
  const target = isDevice ? opts.out : `${opts.out}.recovering.tmp`;
  // Under the retention lock no compaction or purge can replace the segments being read.
  return src.retention.lock(async () => {
    const point = selectPoint(src.retention.points(src.doneSeq(), src.currentPoint()), opts.select, src.volumeId);
    if (!isDevice) await fsp.rm(target, { force: true });
    let chain: SegmentInfo[] = [];
    let table: BigUint64Array | null = null;
    let fromSeq = 0;
    // A reflink clone (and a full verify's hash table) are taken with no differential being applied. A
    // copy is not: it would hold replication for as long as it takes. It needs no hold, because every
    // differential's segment is durable before the differential writes the replica: whatever the copy
    // caught of a write under way belongs to a segment listed after the copy, and is rolled back with it.
    const record = (): void => {
      fromSeq = src.doneSeq();
      chain = src.retention.chainAfter(point.seq);
      if (verify === 'full') table = src.hashes()?.slice() ?? null;
    };
    const copied = (done: number): void => opts.progress?.({ phase: 'copy', doneBytes: done, totalBytes: src.sizeBytes });
    let method: 'reflink' | 'copy' = 'copy';
    const reflinked = !isDevice && !opts.copy && (await src.hold(async () => {
      const ok = await tryReflink(src, target);
      if (ok) record();
      return ok;
    }));
    if (reflinked) method = 'reflink';
    else if (verify === 'full') await src.hold(async () => { await copyReplica(src, target, isDevice, copied); record(); });
    else {
      await copyReplica(src, target, isDevice, copied);
      record();
    }
    const cloned = Date.now();
    const written: Array<{ offset: number; length: number; crc32c: number }> = [];
    let rolledBackBytes = 0;
    try {
      const fh = await fsp.open(target, isDevice ? constants.O_RDWR | constants.O_EXCL : 'r+');
      // The segments' sizes bound what is rolled back (they hold headers and index too).
      const chainBytes = (await Promise.all(chain.map((seg) => fsp.stat(seg.file).then((st) => st.size, () => 0)))).reduce((a, b) => a + b, 0);
      opts.progress?.({ phase: 'rollback', doneBytes: 0, totalBytes: chainBytes });
      try {
        for await (const img of oldestImages(chain.map((s) => s.file), src.blockSize, src.sizeBytes)) {
          await writeAll(fh, img.data, img.offset);
          written.push({ offset: img.offset, length: img.data.length, crc32c: img.crc32c });
          rolledBackBytes += img.data.length;
          opts.progress?.({ phase: 'rollback', doneBytes: Math.min(rolledBackBytes, chainBytes), totalBytes: chainBytes });
          if (table) {
            for (let o = 0; o < img.data.length; o += src.blockSize) (table as BigUint64Array)[(img.offset + o) / src.blockSize] = blockHash(img.data.subarray(o, o + src.blockSize));
          }
        }
        await fh.sync();
        const rolled = Date.now();
        for (const w of written) {
          const back = await readAll(fh, w.length, w.offset);
          if (crc(back) !== w.crc32c) throw tmError('TM_ERR_RECOVERY_VERIFY', `recovered ${opts.out} differs at ${w.offset} (+${w.length}) from the before-image recorded for point #${point.seq}`, { volume: src.volumeId, seq: point.seq });
        }
        if (verify === 'full') await verifyAll(fh, table, src, opts.out, point, (done) => opts.progress?.({ phase: 'verify', doneBytes: done, totalBytes: src.sizeBytes }));
        if (!isDevice) {
          await fsp.rename(target, opts.out);
          await fsyncDir(path.dirname(opts.out)); // the output's name survives a crash, not only its data
        }
        return {
          volume: src.volumeId,
          point,
          out: opts.out,
          method,
          fromSeq,
          segments: chain.length,
          rolledBackBytes,
          verified: verify,
          ms: { clone: cloned - started, rollback: rolled - cloned, verify: Date.now() - rolled, total: Date.now() - started },
        };
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (!isDevice) await fsp.rm(target, { force: true });
      throw wrap(e, `recover ${src.volumeId} to point #${point.seq}`, { volume: src.volumeId, seq: point.seq });
    }
  });
}

/** Every block of the output against the point's block hashes. */
async function verifyAll(fh: fsp.FileHandle, table: BigUint64Array | null, src: RecoverySource, out: string, point: RecoveryPoint, told: (done: number) => void): Promise<void> {
  if (!table) throw tmError('TM_ERR_RECOVERY_VERIFY', `no block hashes are recorded for ${src.volumeId}: full verification is not possible`, { volume: src.volumeId });
  const bs = src.blockSize;
  for (let pos = 0; pos < src.sizeBytes; pos += CHUNK) {
    const buf = await readAll(fh, Math.min(CHUNK, src.sizeBytes - pos), pos);
    told(pos + buf.length);
    for (let o = 0; o < buf.length; o += bs) {
      const b = (pos + o) / bs;
      if (blockHash(buf.subarray(o, o + bs)) !== table[b]) {
        throw tmError('TM_ERR_RECOVERY_VERIFY', `recovered ${out} block ${b} (offset ${pos + o}) differs from point #${point.seq}'s recorded hash`, { volume: src.volumeId, seq: point.seq, offset: pos + o });
      }
    }
  }
}
