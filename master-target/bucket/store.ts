// The bucket as the tier sees it: a few S3 operations on keys under one prefix, with every failure mapped
// to a Tidemark code (wrong credentials, missing bucket, store unreachable, damaged object) and every
// upload confirmed by its ETag (the MD5 of what we sent, or S3's MD5-of-part-MD5s for multipart).
// Works against AWS S3 and S3-compatible stores (tested against OpenStack Swift's s3api: no conditional
// PUT, no aws-chunked uploads, so checksums are sent only where required).
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, PutObjectCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { tmError, TidemarkError, type ErrorCode, isTidemarkError } from '../../common/errors.js';
import { RangedGetter } from './ranged-get.js';

// The SDK warns that future releases need Node 22; the locked version supports Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export interface StoreCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface StoreLocation {
  endpoint: string;
  region: string;
  bucket: string;
  /** Key prefix, without leading or trailing "/" ("" for the bucket's root). */
  prefix: string;
}

export interface StoreOptions extends StoreLocation {
  credentials: StoreCredentials;
  partSizeBytes: number;
  /** Parts or ranges in flight at once. */
  concurrency: number;
}

/** Requests made, by kind: what a store bills for (docs/OPERATIONS.md, costs). */
export interface RequestCounts {
  put: number;
  get: number;
  head: number;
  delete: number;
  list: number;
  multipartParts: number;
  bytesUp: number;
  bytesDown: number;
}

/** "s3://bucket/some/prefix" → bucket and prefix. */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw tmError('TM_ERR_USAGE', `"${url}" is not a bucket URL: give s3://<bucket>/<prefix>`);
  return { bucket: m[1]!, prefix: (m[2] ?? '').replace(/^\/+|\/+$/g, '') };
}

function httpStatus(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

/** A store failure as a Tidemark error; the message names what we did, never a credential. */
export function storeError(e: unknown, doing: string, loc: StoreLocation, key?: string): TidemarkError {
  if (isTidemarkError(e)) return e;
  const name = (e as { name?: string; Code?: string }).Code ?? (e as { name?: string }).name ?? '';
  const status = httpStatus(e);
  const sys = (e as NodeJS.ErrnoException).code ?? (e as { cause?: NodeJS.ErrnoException }).cause?.code;
  let code: ErrorCode = 'TM_ERR_BUCKET_UNAVAILABLE';
  let why = `${name || sys || 'error'}${status ? ` (HTTP ${status})` : ''}: ${(e as Error).message ?? String(e)}`;
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken'].includes(name) || status === 403 || status === 401) {
    code = 'TM_ERR_BUCKET_AUTH';
    why = `the store refused our credentials (${name || `HTTP ${status}`}); check the access key and secret`;
  } else if (name === 'NoSuchBucket' || (status === 404 && !key && doing.startsWith('check'))) {
    code = 'TM_ERR_BUCKET_MISSING';
    why = `bucket "${loc.bucket}" does not exist at ${loc.endpoint}; create it (Tidemark never creates buckets)`;
  }
  return tmError(code, `${doing} ${key ? `s3://${loc.bucket}/${key}` : `bucket ${loc.bucket}`}: ${why}`, { key }, e);
}

/** Expected ETag of a body uploaded as parts of `partSize` (S3's rule: MD5 of the part MD5s, "-count"). */
export function expectedEtag(partMd5s: Buffer[]): string {
  if (partMd5s.length === 1) return partMd5s[0]!.toString('hex');
  return `${createHash('md5').update(Buffer.concat(partMd5s)).digest('hex')}-${partMd5s.length}`;
}

async function fileMd5s(file: string, size: number, partSize: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(Math.min(partSize, Math.max(size, 1)));
    for (let pos = 0; pos < size || out.length === 0; pos += partSize) {
      const h = createHash('md5');
      let left = Math.min(partSize, size - pos);
      let at = pos;
      while (left > 0) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), at);
        if (bytesRead === 0) break;
        h.update(buf.subarray(0, bytesRead));
        left -= bytesRead;
        at += bytesRead;
      }
      out.push(h.digest());
      if (size === 0) break;
    }
  } finally {
    await fh.close();
  }
  return out;
}

export class BucketStore {
  private readonly s3: S3Client;
  /** Recovery's ranged GETs on plain-http endpoints (ranged-get.ts: a fraction of the SDK stream's CPU). */
  private readonly ranged: RangedGetter | null;
  readonly requests: RequestCounts = { put: 0, get: 0, head: 0, delete: 0, list: 0, multipartParts: 0, bytesUp: 0, bytesDown: 0 };

  constructor(readonly opts: StoreOptions) {
    this.s3 = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region,
      forcePathStyle: true,
      credentials: { ...opts.credentials },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 2, // the tier retries with its own backoff
    });
    this.ranged = RangedGetter.usable(opts.endpoint) ? new RangedGetter(opts.endpoint, opts.region, opts.credentials) : null;
    // A body sent with Content-MD5 (single PUTs, our multipart parts) is checked by the store against that
    // signed header, so the payload is not hashed again for the signature (SHA-256 of every byte, here and
    // in the store): x-amz-content-sha256 UNSIGNED-PAYLOAD, which the signer then uses as is.
    this.s3.middlewareStack.add((next) => async (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers;
      if (headers && Object.keys(headers).some((h) => h.toLowerCase() === 'content-md5')) headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    }, { step: 'build', name: 'tidemarkUnsignedPayloadWithMd5' });
  }

  /**
   * A multipart upload written through `room`/`commit` (an ImageSink): the caller fills the part buffers
   * in place; each full part is sent with its Content-MD5 while the next fills (`concurrency` in flight),
   * its ETag checked; `finish` completes the upload and checks the object's ETag (S3's MD5 of the part
   * MD5s). An object of at most one part goes as one PUT. On failure, `abort` (or `finish`'s own error
   * path) aborts the upload so the store keeps no parts.
   */
  multipart(rel: string): MultipartSink {
    return new MultipartSink(this, this.s3, rel);
  }

  key(rel: string): string {
    return this.opts.prefix ? `${this.opts.prefix}/${rel}` : rel;
  }

  /** The bucket exists and our credentials work. */
  async check(): Promise<void> {
    this.requests.head++;
    await this.s3.send(new HeadBucketCommand({ Bucket: this.opts.bucket })).catch((e) => { throw storeError(e, 'check', this.opts); });
  }

  /** Upload a small object in one PUT (Content-MD5 lets the store check it) and confirm its ETag. */
  async putBuffer(rel: string, body: Buffer): Promise<string> {
    const key = this.key(rel);
    const md5 = createHash('md5').update(body).digest();
    this.requests.put++;
    const r = await this.s3.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: key, Body: body, ContentMD5: md5.toString('base64'), ContentLength: body.length }))
      .catch((e) => { throw storeError(e, 'upload', this.opts, key); });
    this.requests.bytesUp += body.length;
    const etag = (r.ETag ?? '').replace(/"/g, '');
    if (etag !== md5.toString('hex')) throw tmError('TM_ERR_BUCKET_CORRUPT', `upload s3://${this.opts.bucket}/${key}: the store answered ETag ${etag}, expected ${md5.toString('hex')}`, { key });
    return etag;
  }

  /** Upload a file: one PUT up to the part size, else multipart; the ETag is checked either way. */
  async putFile(rel: string, file: string): Promise<{ etag: string; bytes: number }> {
    const { size } = await fsp.stat(file);
    const { partSizeBytes } = this.opts;
    if (size <= partSizeBytes) return { etag: await this.putBuffer(rel, await fsp.readFile(file)), bytes: size };
    const key = this.key(rel);
    const md5s = await fileMd5s(file, size, partSizeBytes);
    const expected = expectedEtag(md5s);
    const up = new Upload({ client: this.s3, params: { Bucket: this.opts.bucket, Key: key, Body: createReadStream(file, { highWaterMark: 1 << 20 }) }, partSize: partSizeBytes, queueSize: this.opts.concurrency, leavePartsOnError: false });
    const r = await up.done().catch((e) => { throw storeError(e, 'upload', this.opts, key); });
    const parts = Math.ceil(size / partSizeBytes);
    this.requests.put += 2; // create + complete
    this.requests.multipartParts += parts;
    this.requests.bytesUp += size;
    const etag = (r.ETag ?? '').replace(/"/g, '');
    if (etag !== expected) throw tmError('TM_ERR_BUCKET_CORRUPT', `upload s3://${this.opts.bucket}/${key}: the store answered ETag ${etag}, expected ${expected}`, { key });
    return { etag, bytes: size };
  }

  /**
   * The object's bytes [start, end) as a stream (each piece as the socket delivered it, nothing gathered),
   * or null when it does not exist. The caller counts what it got (`countDown`) and checks the length,
   * and calls `release` (when present) once it holds no piece any more.
   */
  async getStream(rel: string, range: { start: number; end: number }): Promise<(AsyncIterable<Uint8Array> & { release?: () => void }) | null> {
    const key = this.key(rel);
    this.requests.get++;
    // Fast path; anything but a clean answer is asked again through the SDK, which names the failure.
    if (this.ranged) {
      const lean = await this.ranged.get(this.opts.bucket, key, range.start, range.end).catch(() => null);
      if (lean) return lean;
      this.requests.get++; // the SDK's GET below is a second request
    }
    try {
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: key, Range: `bytes=${range.start}-${range.end - 1}` }));
      const body = r.Body as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
      if (r.ContentLength !== undefined && r.ContentLength !== range.end - range.start) {
        body.destroy?.();
        throw tmError('TM_ERR_BUCKET_CORRUPT', `s3://${this.opts.bucket}/${key}: asked for ${range.end - range.start} bytes at ${range.start}, the store sends ${r.ContentLength}`, { key });
      }
      return body;
    } catch (e) {
      const name = (e as { name?: string }).name;
      if (name === 'NoSuchKey' || (httpStatus(e) === 404 && name !== 'NoSuchBucket')) return null;
      throw storeError(e, 'download', this.opts, key);
    }
  }

  countDown(bytes: number): void {
    this.requests.bytesDown += bytes;
  }

  /** The object's bytes [start, end) (all of it without a range), or null when it does not exist. */
  async get(rel: string, range?: { start: number; end: number }): Promise<Buffer | null> {
    const key = this.key(rel);
    this.requests.get++;
    try {
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end - 1}` : undefined }));
      const bytes = await r.Body!.transformToByteArray();
      const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // no copy
      this.requests.bytesDown += body.length;
      if (range && body.length !== range.end - range.start) throw tmError('TM_ERR_BUCKET_CORRUPT', `s3://${this.opts.bucket}/${key}: asked for ${range.end - range.start} bytes at ${range.start}, got ${body.length}`, { key });
      return body;
    } catch (e) {
      const name = (e as { name?: string }).name;
      if (name === 'NoSuchKey' || (httpStatus(e) === 404 && name !== 'NoSuchBucket')) return null;
      throw storeError(e, 'download', this.opts, key);
    }
  }

  async delete(rel: string): Promise<void> {
    const key = this.key(rel);
    this.requests.delete++;
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: key })).catch((e) => { throw storeError(e, 'delete', this.opts, key); });
  }

  close(): void {
    this.s3.destroy();
  }
}

export class MultipartSink {
  private readonly partSize: number;
  private readonly key: string;
  private readonly pool: Buffer[] = [];
  /** The part being filled, then the ones `room` reached into. */
  private bufs: Buffer[] = [];
  private fill = 0;
  private uploadId: Promise<string> | null = null;
  private readonly md5s: Buffer[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private failed: unknown = null;
  private sent = 0;
  private bytes = 0;

  constructor(private readonly store: BucketStore, private readonly s3: S3Client, private readonly rel: string) {
    this.partSize = store.opts.partSizeBytes;
    this.key = store.key(rel);
  }

  private take(): Buffer {
    return this.pool.pop() ?? Buffer.allocUnsafe(this.partSize);
  }

  room(n: number): Buffer[] {
    const out: Buffer[] = [];
    let at = this.fill;
    for (let i = 0; n > 0; i++) {
      if (i === this.bufs.length) this.bufs.push(this.take());
      const len = Math.min(n, this.partSize - at);
      out.push(this.bufs[i]!.subarray(at, at + len));
      n -= len;
      at = (at + len) % this.partSize;
    }
    return out;
  }

  async commit(n: number): Promise<void> {
    this.fill += n;
    this.bytes += n;
    while (this.fill >= this.partSize) {
      this.fill -= this.partSize;
      await this.send(this.bufs.shift()!, this.partSize);
    }
  }

  private async send(buf: Buffer, length: number): Promise<void> {
    if (this.failed) throw this.failed;
    while (this.inFlight.size >= this.store.opts.concurrency) await Promise.race(this.inFlight);
    if (this.failed) throw this.failed;
    const { bucket } = this.store.opts;
    this.uploadId ??= this.s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: this.key })).then((r) => r.UploadId!);
    const number = ++this.sent;
    const body = buf.subarray(0, length);
    const md5 = createHash('md5').update(body).digest();
    this.md5s[number - 1] = md5;
    const p = (async () => {
      const UploadId = await this.uploadId!;
      const r = await this.s3.send(new UploadPartCommand({ Bucket: bucket, Key: this.key, UploadId, PartNumber: number, Body: body, ContentLength: length, ContentMD5: md5.toString('base64') }));
      const etag = (r.ETag ?? '').replace(/"/g, '');
      if (etag !== md5.toString('hex')) throw tmError('TM_ERR_BUCKET_CORRUPT', `upload s3://${bucket}/${this.key} part ${number}: the store answered ETag ${etag}, expected ${md5.toString('hex')}`, { key: this.key });
      this.store.requests.multipartParts++;
      this.store.requests.bytesUp += length;
    })().catch((e) => { this.failed ??= storeError(e, 'upload', this.store.opts, this.key); }).finally(() => {
      this.inFlight.delete(p);
      this.pool.push(buf);
    });
    this.inFlight.add(p);
  }

  /** Send what is left and complete the upload; its ETag checked. */
  async finish(): Promise<{ etag: string; bytes: number; parts: number }> {
    const { bucket } = this.store.opts;
    try {
      if (this.sent === 0) {
        const body = (this.bufs[0] ?? Buffer.alloc(0)).subarray(0, this.fill);
        return { etag: await this.store.putBuffer(this.rel, body), bytes: this.bytes, parts: 1 };
      }
      if (this.fill > 0) await this.send(this.bufs.shift()!, this.fill);
      await Promise.all(this.inFlight);
      if (this.failed) throw this.failed;
      const UploadId = await this.uploadId!;
      const r = await this.s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: this.key, UploadId, MultipartUpload: { Parts: this.md5s.map((m, i) => ({ PartNumber: i + 1, ETag: `"${m.toString('hex')}"` })) } }))
        .catch((e) => { throw storeError(e, 'upload', this.store.opts, this.key); });
      this.store.requests.put += 2; // create + complete
      const expected = expectedEtag(this.md5s);
      const etag = (r.ETag ?? '').replace(/"/g, '');
      if (etag !== expected) throw tmError('TM_ERR_BUCKET_CORRUPT', `upload s3://${bucket}/${this.key}: the store answered ETag ${etag}, expected ${expected}`, { key: this.key });
      return { etag, bytes: this.bytes, parts: this.sent };
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  /** Give up: the parts sent so far are dropped by the store (best effort; a lifecycle rule covers a crash). */
  async abort(): Promise<void> {
    await Promise.allSettled(this.inFlight);
    const id = this.uploadId && await this.uploadId.catch(() => null);
    this.uploadId = null;
    if (id) await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.store.opts.bucket, Key: this.key, UploadId: id })).catch(() => {});
  }
}
