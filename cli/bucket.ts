// `tidemark points|recover <volume> --from s3://bucket/prefix`: the bucket's history of a volume, with no
// master target present. The store's address comes from --endpoint (or TIDEMARK_S3_ENDPOINT), the keys
// from --credentials <file> or the environment (master-target/bucket/credentials.ts).
import path from 'node:path';
import { tmError } from '../common/errors.js';
import { loadCredentials } from '../master-target/bucket/credentials.js';
import { listBucketPoints, recoverFromBucket, type BucketRecoverResult } from '../master-target/bucket/recover.js';
import { BucketStore, parseS3Url } from '../master-target/bucket/store.js';
import type { PointSelector } from '../master-target/recover.js';
import { formatPoints, parseTime, type PointArgs } from './recover.js';

export interface BucketArgs extends PointArgs {
  from: string;
  endpoint?: string;
  region?: string;
  credentials?: string;
  parallel?: string;
}

export function bucketStore(a: BucketArgs): BucketStore {
  const { bucket, prefix } = parseS3Url(a.from);
  const endpoint = a.endpoint ?? process.env.TIDEMARK_S3_ENDPOINT;
  if (!endpoint) throw tmError('TM_ERR_USAGE', '--from s3://… needs the store\'s address: --endpoint <url> or TIDEMARK_S3_ENDPOINT');
  const parallel = a.parallel === undefined ? 8 : Number(a.parallel);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) throw tmError('TM_ERR_USAGE', `--parallel must be 1-64, not "${a.parallel}"`);
  return new BucketStore({ endpoint, region: a.region ?? 'us-east-1', bucket, prefix, credentials: loadCredentials(a.credentials ? path.resolve(a.credentials) : undefined), partSizeBytes: 8 << 20, concurrency: parallel });
}

export async function bucketPointsCommand(volume: string, a: BucketArgs): Promise<void> {
  const store = bucketStore(a);
  try {
    const { manifest, points } = await listBucketPoints(store, volume);
    if (a.json) {
      console.log(JSON.stringify({ volume, from: a.from, generation: manifest.generation, sizeBytes: manifest.sizeBytes, images: manifest.images.length, segments: manifest.segments.length, points }, null, 2));
      return;
    }
    console.log(points.length ? formatPoints(points) : `${volume}: no point in ${a.from} yet`);
    console.log(`\n${points.length} points in ${a.from}; ${manifest.images.length} base images, ${manifest.segments.length} segments`);
  } finally {
    store.close();
  }
}

export async function bucketRecoverCommand(volume: string, a: BucketArgs): Promise<void> {
  if (a.out === undefined) throw tmError('TM_ERR_USAGE', 'recover needs --out <file or device>');
  const sel: PointSelector = {};
  if (a.seq !== undefined) {
    if (!/^\d+$/.test(a.seq)) throw tmError('TM_ERR_USAGE', `--seq must be a whole number, not "${a.seq}"`);
    sel.seq = Number(a.seq);
  }
  if (a.at !== undefined) sel.atMs = parseTime(a.at);
  if (a.tag !== undefined) sel.tag = a.tag;
  if (a.latest) sel.latest = true;
  const store = bucketStore(a);
  try {
    const r = await recoverFromBucket(store, volume, sel, path.resolve(a.out), { force: a.force, concurrency: store.opts.concurrency });
    console.log(a.json ? JSON.stringify(r, null, 2) : describe(r, a.from));
  } finally {
    store.close();
  }
}

function describe(r: BucketRecoverResult, from: string): string {
  return `recovered ${r.volume} to point #${r.point.seq} (${r.point.consistency.toLowerCase()}, captured ${new Date(r.point.atMs).toISOString()}${r.point.tags.length ? `, ${r.point.tags.join(',')}` : ''}) from ${from} into ${r.out}: ${r.images} base images, ${r.segments} segments, ${(r.downloadedBytes / 1048576).toFixed(1)} MiB in ${r.requests} requests, verified, in ${(r.ms.total / 1000).toFixed(2)} s`;
}
