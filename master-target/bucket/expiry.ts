// Long-term retention in the bucket, by tiers (e.g. every point for a day, one an hour for a week, one a
// day for a year), with an age and a space limit; points carrying a pinned tag are never expired.
//
// Planning is a pure function of the manifest, the time and the policy (no request). The plan:
// - the floor: the oldest kept point; segments ending at or before it are deleted (no kept point needs
//   them: rebuilding P uses the segments from P + 1 on);
// - between two consecutive kept points a and b, the segments a+1..b are merged into one (each block's
//   oldest before-image, §10's merge): the points between them go, and a block written many times is kept
//   once. Any image the kept points use still works with the merged segment: rolling an image read at
//   `seq..needsSeq` back to a with segments running from a+1 past needsSeq gives the replica at a;
// - images no kept point uses (the nearest listed image at or after it, with its chain) are deleted, but
//   never the newest image's chain (the next incremental goes over it) nor one newer than every point.
//
// Crash safety (docs/FORMAT.md §11): the manifest first records the merged segments' keys as pending
// deletes, then they are uploaded, then one manifest PUT lists them, unlists the parts and expired objects
// and records those as pending deletes, then they are deleted and the list cleared. A crash at any step
// leaves a manifest that lists only objects that exist, and every object it does not list is in
// `pendingDeletes`, which the next pass deletes before anything else.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../../common/checksum.js';
import { tmError } from '../../common/errors.js';
import type { RecoveryPoint } from '../volume-state.js';
import { oldestImages } from '../retention/merge.js';
import { pointsToKeep, type RetentionPolicy } from '../retention/policy.js';
import { SegmentWriter } from '../retention/segment.js';
import { bucketPoints, planFor, segmentKey, type BucketImage, type BucketSegment, type Manifest } from './manifest.js';
import type { BucketStore } from './store.js';

export interface BucketRetention {
  /** Every point younger than this is kept. */
  keepAllMs: number;
  /** Past the previous tier's `forMs` (or keepAllMs), one point per `everyMs` until this tier's `forMs`. */
  tiers: Array<{ everyMs: number; forMs: number }>;
  /** Points older than this go (pinned ones excepted); defaults to the last tier's `forMs`. */
  maxAgeMs: number;
  /** Listed bytes above this expire the oldest unpinned points first; null for no limit. */
  maxBytes: number | null;
  pinTags: string[];
  /** How often expiry is planned (no request when there is nothing to do). */
  intervalMs: number;
}

/** The bucket policy as the local retention's thinning rules (master-target/retention/policy.ts). */
export function asThinning(r: BucketRetention): RetentionPolicy {
  const tiers = [...r.tiers].sort((a, b) => a.forMs - b.forMs);
  return {
    windowMs: r.maxAgeMs,
    appWindowMs: 0,
    tiers: tiers.map((t, i) => ({ afterMs: i === 0 ? r.keepAllMs : tiers[i - 1]!.forMs, everyMs: t.everyMs })),
    pinTags: r.pinTags,
  };
}

export interface MergePlan {
  base: RecoveryPoint;
  tip: RecoveryPoint;
  parts: BucketSegment[];
  key: string;
}

export interface ExpiryPlan {
  kept: RecoveryPoint[];
  expired: RecoveryPoint[];
  floorSeq: number;
  merges: MergePlan[];
  dropSegments: BucketSegment[];
  dropImages: BucketImage[];
  /** Kept images whose own point expired: their `point` is cleared (else it would stay listed). */
  clearPoints: number[];
  /** Listed bytes expected after the plan (merged segments counted at most one volume each). */
  bytesAfter: number;
  /** maxBytes cannot be met without expiring pinned points or the newest: they are kept. */
  overLimit: boolean;
}

const isPinned = (p: RecoveryPoint, pinTags: readonly string[]): boolean => p.tags.some((t) => pinTags.includes(t));

/** What to expire now, or null when nothing is. */
export function planExpiry(m: Manifest, nowMs: number, r: BucketRetention): ExpiryPlan | null {
  const points = bucketPoints(m);
  if (points.length < 2) return null;
  const newest = points.at(-1)!;
  const keepSeqs = pointsToKeep(points, nowMs, asThinning(r));
  let kept = points.filter((p) => keepSeqs.has(p.seq));
  // The images each point is rebuilt from, on the manifest as it is (still valid after the merges).
  const chains = new Map<number, number[]>();
  for (const p of points) chains.set(p.seq, planFor(m, p)!.images.map((i) => i.id));
  const segs = [...m.segments].sort((a, b) => a.fromSeq - b.fromSeq);

  const build = (keep: RecoveryPoint[]): ExpiryPlan => {
    const floorSeq = keep[0]!.seq;
    const dropSegments = segs.filter((s) => s.toSeq <= floorSeq);
    const merges: MergePlan[] = [];
    for (let i = 0; i + 1 < keep.length; i++) {
      const a = keep[i]!;
      const b = keep[i + 1]!;
      const parts = segs.filter((s) => s.fromSeq > a.seq && s.toSeq <= b.seq);
      if (parts.length < 2 || parts[0]!.fromSeq !== a.seq + 1 || parts.at(-1)!.toSeq !== b.seq) continue;
      if (parts.some((s, j) => j > 0 && s.fromSeq !== parts[j - 1]!.toSeq + 1)) continue;
      merges.push({ base: a, tip: b, parts, key: segmentKey(m.volumeId, a.seq + 1, b.seq) });
    }
    const keepImages = new Set<number>();
    for (const p of keep) for (const id of chains.get(p.seq) ?? []) keepImages.add(id);
    const addChain = (img: BucketImage | undefined): void => {
      for (let cur = img; cur;) {
        keepImages.add(cur.id);
        const parent = cur.parentId;
        cur = parent === null ? undefined : m.images.find((x) => x.id === parent);
      }
    };
    addChain(m.images.at(-1));
    for (const img of m.images) if (img.seq > newest.seq) addChain(img);
    const dropImages = m.images.filter((i) => !keepImages.has(i.id));
    const merged = new Set(merges.flatMap((g) => g.parts));
    const dropped = new Set(dropSegments);
    const bytesAfter = segs.filter((s) => !merged.has(s) && !dropped.has(s)).reduce((n, s) => n + s.bytes, 0)
      + merges.reduce((n, g) => n + Math.min(g.parts.reduce((k, s) => k + s.bytes, 0), m.sizeBytes + 4096), 0)
      + m.images.filter((i) => keepImages.has(i.id)).reduce((n, i) => n + i.bytes, 0);
    const keptSet = new Set(keep.map((p) => p.seq));
    const clearPoints = m.images.filter((i) => keepImages.has(i.id) && i.point && !keptSet.has(i.point.seq)).map((i) => i.id);
    return { kept: keep, expired: points.filter((p) => !keptSet.has(p.seq)), floorSeq, merges, dropSegments, dropImages, clearPoints, bytesAfter, overLimit: false };
  };

  let plan = build(kept);
  if (r.maxBytes !== null) {
    // Over the space limit: expire the oldest unpinned points (never the newest) until it fits.
    while (plan.bytesAfter > r.maxBytes) {
      const victim = kept.find((p) => p !== newest && !isPinned(p, r.pinTags));
      if (!victim) {
        plan.overLimit = true;
        break;
      }
      kept = kept.filter((p) => p !== victim);
      plan = build(kept);
    }
  }
  const nothing = plan.merges.length === 0 && plan.dropSegments.length === 0 && plan.dropImages.length === 0 && plan.clearPoints.length === 0;
  return nothing ? (plan.overLimit ? plan : null) : plan;
}

/** Stages a test may stop at (an injected failure): after each of them the manifest is consistent. */
export type ExpiryStage = 'intent' | 'uploaded' | 'committed' | 'deleted-one';

export interface ExpiryContext {
  store: BucketStore;
  workDir: string;
  /** Replace the manifest in the bucket (one PUT); bumps its generation. */
  save(): Promise<void>;
  /** Tests: called after each stage; throwing there is a crash at that point. */
  at?: (stage: ExpiryStage) => void | Promise<void>;
}

/** Delete every pending key (a missing one is fine: an earlier attempt got it), then clear the list. */
export async function finishDeletes(m: Manifest, ctx: ExpiryContext): Promise<number> {
  const pending = [...(m.pendingDeletes ?? [])];
  if (pending.length === 0) return 0;
  const listed = new Set([...m.segments.map((s) => s.key), ...m.images.map((i) => i.key)]);
  let n = 0;
  for (const key of pending) {
    // Never delete what the manifest lists (a key uploaded again after being unlisted).
    if (!listed.has(key)) await ctx.store.delete(key);
    n++;
    if (n === 1) await ctx.at?.('deleted-one');
  }
  m.pendingDeletes = [];
  await ctx.save();
  return pending.length;
}

/** Carry out `plan` on manifest `m` (changed in place), crash-safely. */
export async function runExpiry(m: Manifest, plan: ExpiryPlan, ctx: ExpiryContext): Promise<{ uploadedBytes: number; deleted: number }> {
  const newKeys = plan.merges.map((g) => g.key);
  let uploadedBytes = 0;
  if (newKeys.length > 0) {
    m.pendingDeletes = [...new Set([...(m.pendingDeletes ?? []), ...newKeys])];
    await ctx.save();
  }
  await ctx.at?.('intent');
  const made: BucketSegment[] = [];
  for (const g of plan.merges) {
    const dir = await fsp.mkdtemp(path.join(ctx.workDir, 'merge-'));
    try {
      const files: string[] = [];
      for (const [i, s] of g.parts.entries()) {
        const body = await ctx.store.get(s.key);
        if (!body) throw tmError('TM_ERR_BUCKET_CORRUPT', `segment s3://${ctx.store.opts.bucket}/${ctx.store.key(s.key)} listed in the manifest is missing`, { key: s.key });
        if (body.length !== s.bytes || crc(body) !== s.crc32c) throw tmError('TM_ERR_BUCKET_CORRUPT', `segment ${ctx.store.key(s.key)} does not match the checksum the manifest records`, { key: s.key });
        const f = path.join(dir, `${String(i).padStart(6, '0')}.part`);
        await fsp.writeFile(f, body);
        files.push(f);
      }
      const w = await SegmentWriter.create(dir, { volumeId: m.volumeId, fromSeq: g.base.seq + 1, toSeq: g.tip.seq, blockSize: m.blockSize, sizeBytes: m.sizeBytes, base: g.base, tip: g.tip, createdAt: Date.now() });
      for await (const img of oldestImages(files, m.blockSize, m.sizeBytes)) await w.add(img);
      const { file, bytes } = await w.commit();
      await ctx.store.putFile(g.key, file);
      const body = await fsp.readFile(file);
      made.push({ key: g.key, fromSeq: g.base.seq + 1, toSeq: g.tip.seq, bytes, crc32c: crc(body), base: g.base, tip: g.tip, uploadedAt: Date.now() });
      uploadedBytes += bytes;
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }
  await ctx.at?.('uploaded');
  // One manifest PUT: the merged segments listed, the parts and expired objects unlisted and pending.
  const gone = new Set<string>([...plan.merges.flatMap((g) => g.parts.map((s) => s.key)), ...plan.dropSegments.map((s) => s.key), ...plan.dropImages.map((i) => i.key)]);
  m.segments = [...m.segments.filter((s) => !gone.has(s.key)), ...made].sort((a, b) => a.fromSeq - b.fromSeq);
  m.images = m.images.filter((i) => !gone.has(i.key)).map((i) => (plan.clearPoints.includes(i.id) ? { ...i, point: null } : i));
  m.floorSeq = Math.max(m.floorSeq ?? 0, plan.floorSeq);
  m.pendingDeletes = [...new Set([...(m.pendingDeletes ?? []).filter((k) => !newKeys.includes(k)), ...gone])];
  await ctx.save();
  await ctx.at?.('committed');
  const deleted = await finishDeletes(m, ctx);
  return { uploadedBytes, deleted };
}
