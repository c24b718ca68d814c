// The bucket tier of one volume: in the background, uploads its sealed retention segments (those of
// applied differentials) and, every `imageIntervalMs`, a base image of the replica (a full one first and
// every `fullEvery` images, else only the blocks changed since the last), then rewrites the manifest.
// The manifest in the bucket is the tier's only state: at start it is read back (one GET), and nothing is
// listed in it before its upload is confirmed, so a crash or a failing store leaves at worst an unlisted
// object that the next attempt overwrites. Local retention keeps every segment the bucket does not yet
// hold (RetentionLog's `keepAfter`). Failures back off (1 s doubling to 60 s) and resume.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../../common/checksum.js';
import { removeTempFiles } from '../../common/durable.js';
import { wrap } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { RetentionLog } from '../retention/retention-log.js';
import { readSegment } from '../retention/segment.js';
import { blockRuns, writeImage } from './image.js';
import { finishDeletes, planExpiry, runExpiry, type BucketRetention, type ExpiryContext, type ExpiryStage } from './expiry.js';
import { decodeManifest, emptyManifest, encodeManifest, imageKey, manifestKey, segmentKey, uploadedThrough, type BucketImage, type Manifest } from './manifest.js';
import type { BucketStore } from './store.js';

export interface TierOptions {
  imageIntervalMs: number;
  fullEvery: number;
  pollIntervalMs: number;
  /** Long-term retention in the bucket (expiry by tiers); null keeps everything. */
  retention?: BucketRetention | null;
  /** Tests: called at each expiry stage (throwing there is a crash at that point). */
  expiryHook?: (stage: ExpiryStage) => void | Promise<void>;
}

export interface TierSource {
  volumeId: string;
  replicaPath: string;
  sizeBytes: number;
  blockSize: number;
  retention: RetentionLog;
  doneSeq(): number;
  /** doneSeq once no differential is being applied (waits for one under way). */
  settledSeq(): Promise<number>;
}

export interface TierStats {
  bucket: string;
  prefix: string;
  /** Newest sequence whose segments are all in the bucket. */
  uploadedSeq: number;
  /** Newest point the bucket alone can rebuild (its newest image's sequence). */
  imageSeq: number;
  images: number;
  segments: number;
  /** Sealed segments not yet in the bucket, and their bytes. */
  backlogSegments: number;
  backlogBytes: number;
  /** Age of the oldest sealed segment not yet in the bucket (ms), 0 when none. */
  backlogAgeMs: number;
  uploadedBytes: number;
  requests: BucketStore['requests'];
  lastUploadAt: number;
  lastError: string | null;
  lastErrorCode: string | null;
  /** What the tier is doing now (idle, segments, image, manifest, expiry). */
  phase: string;
  /** Expiry: passes that changed the bucket, points and objects expired, keys waiting to be deleted. */
  expiry: { runs: number; expiredPoints: number; deletedObjects: number; mergedSegments: number; pendingDeletes: number; floorSeq: number; listedBytes: number; overLimit: boolean; lastRunAt: number };
}

export class BucketTier {
  manifest: Manifest | null = null;
  readonly stats: TierStats;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  private backoffMs = 0;
  private nextImageAt = 0;
  private nextExpiryAt = 0;
  private readonly workDir: string;

  constructor(private readonly src: TierSource, readonly store: BucketStore, private readonly opts: TierOptions, stateDir: string, private readonly log: Logger) {
    this.workDir = path.join(stateDir, 'bucket-tier');
    this.stats = { bucket: store.opts.bucket, prefix: store.opts.prefix, uploadedSeq: 0, imageSeq: 0, images: 0, segments: 0, backlogSegments: 0, backlogBytes: 0, backlogAgeMs: 0, uploadedBytes: 0, requests: store.requests, lastUploadAt: 0, lastError: null, lastErrorCode: null, phase: 'idle', expiry: { runs: 0, expiredPoints: 0, deletedObjects: 0, mergedSegments: 0, pendingDeletes: 0, floorSeq: 0, listedBytes: 0, overLimit: false, lastRunAt: 0 } };
  }

  /**
   * Local segments ending after this sequence are not in the bucket yet (or are still needed to find the
   * blocks the next incremental image holds): local retention must keep them.
   */
  keepAfter(): number {
    const m = this.manifest;
    if (!m) return 0;
    const lastImage = m.images.at(-1);
    return Math.min(this.stats.uploadedSeq, lastImage?.seq ?? 0);
  }

  async open(): Promise<void> {
    await fsp.mkdir(this.workDir, { recursive: true, mode: 0o700 });
    await removeTempFiles(this.workDir);
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.running = this.cycle().finally(() => { this.running = null; });
    }, ms);
    this.timer.unref();
  }

  /** Run one pass now (tests and benchmarks); resolves when it is done. */
  async pass(): Promise<void> {
    while (this.running) await this.running;
    await this.step();
  }

  private async cycle(): Promise<void> {
    try {
      await this.step();
      this.backoffMs = 0;
      this.schedule(this.opts.pollIntervalMs);
    } catch (e) {
      this.stats.phase = 'backoff';
      const err = wrap(e, `bucket tier of ${this.src.volumeId}`, { volume: this.src.volumeId });
      this.stats.lastError = `${err.code}: ${err.message}`;
      this.stats.lastErrorCode = err.code;
      this.backoffMs = Math.min(60_000, Math.max(1000, this.backoffMs * 2));
      this.log.error({ volume: this.src.volumeId, code: err.code, err: err.message, retryInMs: this.backoffMs }, 'bucket tier: upload failed; backing off');
      this.schedule(this.backoffMs);
    }
  }

  private async step(): Promise<void> {
    this.stats.phase = 'manifest';
    if (!this.manifest) await this.load();
    // An upload that failed after recording its key (an image): its object, if any, goes now.
    else if (this.manifest.pendingDeletes?.length) await finishDeletes(this.manifest, this.expiryContext());
    this.stats.phase = 'segments';
    const done = this.src.doneSeq();
    let changed = await this.uploadSegments(done);
    if (Date.now() >= this.nextImageAt && this.src.doneSeq() > (this.manifest!.images.at(-1)?.seq ?? 0)) {
      await this.uploadImage();
      changed = true;
      this.nextImageAt = Date.now() + this.opts.imageIntervalMs;
    }
    this.stats.phase = 'manifest';
    if (changed) await this.saveManifest();
    const r = this.opts.retention;
    if (r && Date.now() >= this.nextExpiryAt) {
      this.stats.phase = 'expiry';
      await this.expire(r);
      this.nextExpiryAt = Date.now() + r.intervalMs;
    }
    this.stats.phase = 'idle';
    this.refreshBacklog();
    this.stats.lastError = null;
    this.stats.lastErrorCode = null;
  }

  private async load(): Promise<void> {
    await this.store.check();
    const key = manifestKey(this.src.volumeId);
    const buf = await this.store.get(key);
    const m = buf ? decodeManifest(buf, this.store.key(key)) : emptyManifest(this.src.volumeId, this.src.sizeBytes, this.src.blockSize);
    this.manifest = m;
    this.stats.uploadedSeq = uploadedThrough(m);
    this.stats.imageSeq = m.images.at(-1)?.seq ?? 0;
    this.stats.images = m.images.length;
    this.stats.segments = m.segments.length;
    this.log.info({ volume: this.src.volumeId, bucket: this.store.opts.bucket, segments: m.segments.length, images: m.images.length, uploadedSeq: this.stats.uploadedSeq, pendingDeletes: m.pendingDeletes?.length ?? 0 }, buf ? 'bucket tier: manifest read' : 'bucket tier: new volume in the bucket');
    // Objects a crash left unlisted (an upload or an expiry under way): deleted before anything else.
    if (m.pendingDeletes?.length) {
      const n = await finishDeletes(m, this.expiryContext());
      this.log.info({ volume: this.src.volumeId, deleted: n }, 'bucket tier: deleted the objects an interrupted pass left unlisted');
    }
    this.refreshListed();
  }

  private expiryContext(): ExpiryContext {
    return { store: this.store, workDir: this.workDir, save: () => this.saveManifest(), at: this.opts.expiryHook };
  }

  private refreshListed(): void {
    const m = this.manifest!;
    this.stats.expiry.pendingDeletes = m.pendingDeletes?.length ?? 0;
    this.stats.expiry.floorSeq = m.floorSeq ?? 0;
    this.stats.expiry.listedBytes = m.segments.reduce((n, s) => n + s.bytes, 0) + m.images.reduce((n, i) => n + i.bytes, 0);
    this.stats.segments = m.segments.length;
    this.stats.images = m.images.length;
  }

  /** Expire what the bucket's retention no longer keeps (no request when nothing is due). */
  private async expire(r: BucketRetention): Promise<void> {
    const m = this.manifest!;
    if (m.pendingDeletes?.length) await finishDeletes(m, this.expiryContext());
    const plan = planExpiry(m, Date.now(), r);
    if (plan?.overLimit !== this.stats.expiry.overLimit && plan?.overLimit) this.log.warn({ volume: this.src.volumeId, maxBytes: r.maxBytes, bytesAfter: plan.bytesAfter }, 'bucket retention: the pinned points and the newest alone exceed maxBytes; they are kept');
    this.stats.expiry.overLimit = plan?.overLimit ?? false;
    if (!plan || (plan.merges.length === 0 && plan.dropSegments.length === 0 && plan.dropImages.length === 0 && plan.clearPoints.length === 0)) return;
    const started = Date.now();
    const res = await runExpiry(m, plan, this.expiryContext());
    const e = this.stats.expiry;
    e.runs++;
    e.expiredPoints += plan.expired.length;
    e.deletedObjects += res.deleted;
    e.mergedSegments += plan.merges.length;
    e.lastRunAt = Date.now();
    this.stats.uploadedBytes += res.uploadedBytes;
    this.refreshListed();
    this.log.info({ volume: this.src.volumeId, expired: plan.expired.length, kept: plan.kept.length, floorSeq: plan.floorSeq, merged: plan.merges.length, deleted: res.deleted, listedBytes: e.listedBytes, ms: Date.now() - started }, 'bucket tier: expired points');
  }

  private async saveManifest(): Promise<void> {
    const m = this.manifest!;
    m.generation++;
    m.updatedAt = Date.now();
    await this.store.putBuffer(manifestKey(this.src.volumeId), encodeManifest(m));
  }

  /** Upload, oldest first, every sealed local segment (through `throughSeq`) the bucket lacks. */
  private async uploadSegments(throughSeq: number): Promise<boolean> {
    const m = this.manifest!;
    let uploaded = false;
    const todo = this.src.retention.segments.filter((s) => s.toSeq > this.stats.uploadedSeq && s.toSeq <= throughSeq);
    for (const s of todo) {
      if (s.fromSeq !== this.stats.uploadedSeq + 1 && this.stats.uploadedSeq > 0) {
        // Local history has a gap the bucket cannot bridge (retention restarted its chain): the next
        // image is a full one and points before the gap stay recoverable from the older images.
        this.log.warn({ volume: this.src.volumeId, uploadedSeq: this.stats.uploadedSeq, fromSeq: s.fromSeq }, 'bucket tier: local retention does not continue the bucket\'s segments; the next image is full');
      }
      const body = await fsp.readFile(s.file).catch((e) => { throw wrap(e, `read retention segment ${s.file}`, { volume: this.src.volumeId }); });
      const key = segmentKey(this.src.volumeId, s.fromSeq, s.toSeq);
      await this.store.putBuffer(key, body);
      m.segments.push({ key, fromSeq: s.fromSeq, toSeq: s.toSeq, bytes: body.length, crc32c: crc(body), base: s.base, tip: s.tip, uploadedAt: Date.now() });
      this.stats.uploadedSeq = s.toSeq;
      this.stats.uploadedBytes += body.length;
      this.stats.segments = m.segments.length;
      this.stats.lastUploadAt = Date.now();
      uploaded = true;
    }
    return uploaded;
  }

  /** The blocks written since `seq`, from the local segments after it, or null if they do not reach back. */
  private async changedSince(seq: number): Promise<Set<number> | null> {
    const after = this.src.retention.segments.filter((s) => s.toSeq > seq);
    if (after.length === 0 || after[0]!.fromSeq > seq + 1) return null;
    for (let i = 1; i < after.length; i++) if (after[i]!.fromSeq !== after[i - 1]!.toSeq + 1) return null;
    const bs = this.src.blockSize;
    const blocks = new Set<number>();
    for (const s of after) for await (const img of readSegment(s.file)) for (let o = 0; o < img.data.length; o += bs) blocks.add((img.offset + o) / bs);
    return blocks;
  }

  private async uploadImage(): Promise<void> {
    const m = this.manifest!;
    this.stats.phase = 'image: settle';
    const seq = await this.src.settledSeq();
    this.stats.phase = 'image: changed blocks';
    const prev = m.images.at(-1);
    const sinceFull = prev ? m.images.length - m.images.map((i) => i.kind).lastIndexOf('full') : 0;
    const changed = prev && sinceFull < this.opts.fullEvery && this.stats.uploadedSeq >= prev.needsSeq ? await this.changedSince(prev.seq) : null;
    const id = m.nextImageId;
    const kind = changed ? 'incremental' : 'full';
    const started = Date.now();
    const key = imageKey(this.src.volumeId, id, seq);
    // Recorded before the upload: a crash before the manifest lists the image deletes it at restart.
    this.stats.phase = 'image: record';
    m.pendingDeletes = [...(m.pendingDeletes ?? []), key];
    await this.saveManifest();
    // The image streams from the replica into the multipart upload's parts (no scratch file).
    this.stats.phase = 'image: upload';
    const sink = this.store.multipart(key);
    let built;
    try {
      built = await writeImage(this.src.replicaPath, { volumeId: this.src.volumeId, id, kind, seq, parentId: changed ? prev!.id : null, sizeBytes: this.src.sizeBytes, blockSize: this.src.blockSize, createdAt: Date.now() }, changed ? blockRuns(changed, this.src.blockSize, this.src.sizeBytes) : null, sink);
    } catch (e) {
      await sink.abort();
      throw e;
    }
    // Every replica read is done: every differential whose write the read may have caught is applied
    // once this returns, and its segment sealed. (The last parts go on uploading meanwhile.)
    const settled = this.src.settledSeq();
    settled.catch(() => {});
    const { bytes } = await sink.finish();
    this.stats.phase = 'image: settle';
    const needsSeq = await settled;
    this.stats.phase = 'image: segments';
    await this.uploadSegments(needsSeq);
    this.stats.phase = 'image: record';
    if (needsSeq > seq && this.stats.uploadedSeq < needsSeq) throw wrap(new Error(`segments through #${needsSeq} are not all local (uploaded through #${this.stats.uploadedSeq})`), 'base image');
    const point = this.src.retention.segments.find((s) => s.toSeq === seq)?.tip ?? m.segments.find((s) => s.toSeq === seq)?.tip ?? null;
    const img: BucketImage = { key, id, kind, seq, needsSeq, parentId: changed ? prev!.id : null, bytes, dataBytes: built.dataBytes, chunks: built.chunks, indexOffset: built.indexOffset, indexCrc32c: built.indexCrc32c, uploadedAt: Date.now(), point };
    m.images.push(img);
    m.pendingDeletes = m.pendingDeletes.filter((k) => k !== key);
    m.nextImageId = id + 1;
    this.stats.images = m.images.length;
    this.stats.imageSeq = seq;
    this.stats.uploadedBytes += bytes;
    this.log.info({ volume: this.src.volumeId, id, kind, seq, needsSeq, bytes, dataBytes: built.dataBytes, ms: Date.now() - started }, 'bucket tier: base image uploaded');
  }

  /** For status and metrics: the counters with the backlog as of now (no credential in it). */
  status(): TierStats {
    this.refreshBacklog();
    return { ...this.stats, requests: { ...this.store.requests }, expiry: { ...this.stats.expiry } };
  }

  private refreshBacklog(): void {
    const waiting = this.src.retention.segments.filter((s) => s.toSeq > this.stats.uploadedSeq && s.toSeq <= this.src.doneSeq());
    this.stats.backlogSegments = waiting.length;
    this.stats.backlogBytes = waiting.reduce((n, s) => n + s.bytes, 0);
    this.stats.backlogAgeMs = waiting.length ? Math.max(0, Date.now() - waiting[0]!.createdAt) : 0;
  }

  /** Stop after the pass under way (bounded by the store's own timeouts). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running?.catch(() => {});
    this.store.close();
  }
}
