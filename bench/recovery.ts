// Recovery from the master target's retention log, and what keeping it costs:
//   1. Time to recover points 10, 100 and N (default 300; TIDEMARK_BENCH_RECOVERY_DIFFS) differentials
//      back on a 1 GiB and a 4 GiB replica, through the reflink path (FICLONE + roll back) and the copy
//      path (copy: true), each from a cold cache, next to `cp --reflink=never` + sync and
//      `cp --reflink=always` of the replica measured in the same run; the copy fallback on ext4 (no reflink
//      there); verify "changed" vs "full".
//   2. Apply throughput with retention on and off (the real Applier, DiffStore and RetentionLog in-process,
//      differentials written by HrlWriter into the staging folder): OFF, ON, OFF, ON on 1 GiB, OFF then
//      the history on 4 GiB.
//   3. Retention bytes per changed byte, before and after a maintenance pass that thins and compacts, for a
//      workload spread over the volume and one that overwrites a 64 MiB hot region; then what compaction
//      writes while points keep aging out, one maintenance pass per simulated minute.
// Every recovered image is checked against the crc32c of the replica taken when it was at that point.
// Needs root (loop devices, mounts). Cleans up its mounts and loop devices.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../common/log.js';
import { currentPoint } from '../master-target/volume-state.js';
import { recoverPoint, type RecoverResult, type RecoverySource } from '../master-target/recover.js';
import type { RetentionPolicy } from '../master-target/retention/policy.js';
import { RetentionLog, type RetentionOptions } from '../master-target/retention/retention-log.js';
import { benchSizeMiB, GiB, MiB, WORK_DIR, timed, type BenchResult, type Benchmark } from './harness.js';
import { report, type ApplyRow, type CpRow, type RecoveryRow, type RetentionRow } from './recovery-report.js';
import { coldCache, cachedBytes, copyLoop, cpReference, fileCrc, makeFs, requirements, sh, teardownSystem, version, type Fs } from './recovery-system.js';
import { BenchVolume, Workload, type ApplyRun, type WorkloadSpec } from './recovery-workload.js';

/** Differentials per timed apply run in the OFF/ON alternation. */
const BATCH = 50;
/** Most differentials staged at once (bounds the staging folder). */
const STAGE_CHUNK = 100;
const MIN_CHANGE = 1 * MiB;
const MAX_CHANGE = 4 * MiB;
const HOT_BYTES = 64 * MiB;
const COMPACT_DIFFS = 100;
const CYCLE_MS = 5000;
/** Maintenance passes a simulated minute apart after the first (part 3). */
const AGING_PASSES = 15;
/** Quick recoveries (reflink, up to 100 back) run this many times; the median is reported. */
const REPEATS = 3;
const HOUR = 3_600_000;
const KEEP_ALL: RetentionOptions = { policy: { windowMs: 1e12, appWindowMs: 1e12, tiers: [], pinTags: [] }, maxBytes: null, onFull: 'purge' };
/** Every point of the last 30 minutes, then the oldest of each hour. */
const THIN: RetentionPolicy = { windowMs: 72 * HOUR, appWindowMs: 0, tiers: [{ afterMs: 30 * 60_000, everyMs: HOUR }], pinTags: [] };

export const recovery: Benchmark = {
  description: 'retention log: recover points 10/100/300 differentials back on 1 and 4 GiB replicas (reflink vs copy vs cp; TIDEMARK_BENCH_RECOVERY_DIFFS sets the 300), apply MB/s with retention on vs off, retention bytes per changed byte before/after compaction',
  run,
};

/** Differentials of history behind the replica: the oldest point recovered. 300 keeps the run near 10 minutes. */
function historyLength(): number {
  const env = process.env.TIDEMARK_BENCH_RECOVERY_DIFFS;
  if (env === undefined || env === '') return 300;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 100) throw new Error(`TIDEMARK_BENCH_RECOVERY_DIFFS must be an integer of at least 100, not "${env}"`);
  return n;
}

const spread = (sizeBytes: number): WorkloadSpec => ({ name: 'spread', regionOffset: 0, regionBytes: sizeBytes, minBytes: MIN_CHANGE, maxBytes: MAX_CHANGE });
const hot = (sizeBytes: number): WorkloadSpec => ({ name: 'hot', regionOffset: Math.floor(sizeBytes / 4 / MiB) * MiB, regionBytes: HOT_BYTES, minBytes: MIN_CHANGE, maxBytes: MAX_CHANGE });

/** Stage and apply up to `toSeq` in batches, stopping at each checkpoint to take the replica's crc. */
async function advance(v: BenchVolume, fs: Fs, wl: Workload, toSeq: number, atMs: (seq: number) => number, withRetention: boolean, checkpoints: number[], crcs: Map<number, number>): Promise<ApplyRun[]> {
  const runs: ApplyRun[] = [];
  while (v.doneSeq < toSeq) {
    const stop = Math.min(v.doneSeq + STAGE_CHUNK, toSeq, ...checkpoints.filter((c) => c > v.doneSeq));
    await v.stage(stop - v.doneSeq, wl, atMs);
    sh('sync', '-f', fs.mnt); // each batch starts with nothing left to write back from staging
    const r = await v.apply(withRetention);
    runs.push(r);
    console.log(`    ${v.id} ${r.fromSeq}..${r.toSeq} retention ${withRetention ? 'ON ' : 'OFF'}: ${(r.dataBytes / MiB / r.seconds).toFixed(1)} MB/s of differential data (${(r.dataBytes / MiB).toFixed(0)} MiB in ${r.seconds.toFixed(1)} s)`);
    if (checkpoints.includes(v.doneSeq) || v.doneSeq === toSeq) crcs.set(v.doneSeq, await fileCrc(v.replicaPath));
  }
  return runs;
}

/** What the rows need to know of a volume: the replica's own path comes with the RecoverySource. */
type VolumeFacts = Pick<BenchVolume, 'id' | 'sizeBytes' | 'dataBytes'>;

/** One cold recovery, checked against the replica's crc at the point. */
async function recoverOnce(v: VolumeFacts, fs: Fs, src: RecoverySource, seq: number, requested: RecoveryRow['requested'], crcs: Map<number, number>, verify: 'changed' | 'full'): Promise<RecoverySample> {
  const out = path.join(fs.mnt, `recovered-${v.id}-${seq}.img`);
  const chain = src.retention.chainAfter(seq);
  coldCache(fs.mnt, [src.replicaPath, ...chain.map((s) => s.file)]);
  const cachedAfterDrop = cachedBytes(chain[0]?.file ?? src.replicaPath);
  const load = os.loadavg()[0]!;
  const cpu0 = process.cpuUsage();
  const r = await recoverPoint(src, { select: { seq }, out, copy: requested === 'copy', verify });
  const cpu = process.cpuUsage(cpu0);
  const expected = crcs.get(seq);
  const ok = expected !== undefined && (await fileCrc(out)) === expected;
  await fsp.rm(out, { force: true });
  return { result: r, cpuSeconds: (cpu.user + cpu.system) / 1e6, cpuSystemSeconds: cpu.system / 1e6, load, ok, cachedAfterDrop, chainBytes: chain.reduce((n, s) => n + s.bytes, 0) };
}

/** A recovery, repeated `repeats` times (median of the totals reported), every output checked. */
async function recoverRun(v: VolumeFacts, fs: Fs, src: RecoverySource, seq: number, requested: RecoveryRow['requested'], crcs: Map<number, number>, verify: 'changed' | 'full' = 'changed', repeats = 1): Promise<RecoveryRow> {
  const samples: RecoverySample[] = [];
  for (let i = 0; i < repeats; i++) samples.push(await recoverOnce(v, fs, src, seq, requested, crcs, verify));
  const mid = [...samples].sort((a, b) => a.result.ms.total - b.result.ms.total)[samples.length >> 1]!;
  const r = mid.result;
  const row: RecoveryRow = {
    fs: fs.type, volumeBytes: v.sizeBytes, back: src.doneSeq() - seq, seq, requested, method: r.method, verify, ms: r.ms, cpuSeconds: mid.cpuSeconds, cpuSystemSeconds: mid.cpuSystemSeconds, load: mid.load,
    samplesSeconds: samples.map((x) => x.result.ms.total / 1000), rolledBackBytes: r.rolledBackBytes, segments: r.segments, chainBytes: mid.chainBytes,
    changedBytes: [...v.dataBytes].filter(([s]) => s > seq && s <= src.doneSeq()).reduce((n, [, b]) => n + b, 0),
    ok: samples.every((x) => x.ok && x.result.method === r.method), cachedAfterDrop: Math.max(...samples.map((x) => x.cachedAfterDrop)),
  };
  console.log(`    ${fs.type} ${v.sizeBytes / GiB} GiB, ${row.back} back, ${requested} -> ${r.method}, verify ${verify}: ${(r.ms.total / 1000).toFixed(2)} s (clone ${(r.ms.clone / 1000).toFixed(2)}, rollback ${(r.ms.rollback / 1000).toFixed(2)}, verify ${(r.ms.verify / 1000).toFixed(2)}; CPU ${row.cpuSeconds.toFixed(2)} s; load ${row.load.toFixed(1)})${repeats > 1 ? ` median of ${row.samplesSeconds.map((x) => x.toFixed(2)).join(', ')}` : ''}; ${(r.rolledBackBytes / MiB).toFixed(0)} MiB rolled back from ${r.segments} segments; bytes ${row.ok ? 'ok' : 'WRONG'}`);
  return row;
}

interface RecoverySample {
  result: RecoverResult;
  cpuSeconds: number;
  cpuSystemSeconds: number;
  load: number;
  ok: boolean;
  cachedAfterDrop: number;
  chainBytes: number;
}

async function cpRows(v: Pick<BenchVolume, 'id' | 'sizeBytes'>, replicaPath: string, fs: Fs, modes: Array<'never' | 'always'>): Promise<CpRow[]> {
  const rows: CpRow[] = [];
  for (const mode of modes) {
    const run = await cpReference(fs.mnt, replicaPath, path.join(fs.mnt, `cp-${v.id}.img`), mode, [replicaPath]);
    rows.push({ fs: fs.type, volumeBytes: v.sizeBytes, mode, run });
    console.log(`    ${fs.type} ${v.sizeBytes / GiB} GiB: cp --reflink=${mode} ${run.copySeconds.toFixed(2)} s + sync ${run.syncSeconds.toFixed(2)} s (${run.sharedExtents} shared extents)`);
  }
  return rows;
}

function agesFor(n: number): number[] {
  return [...new Set([10, 100, n])].filter((a) => a <= n).sort((a, b) => a - b);
}

/** Part 1 on one volume: every age through the reflink path, the given ages through the copy path too. */
async function recoveries(v: BenchVolume, fs: Fs, ages: number[], copyAges: number[], crcs: Map<number, number>, rows: RecoveryRow[]): Promise<void> {
  const src = v.source();
  for (const back of ages) {
    rows.push(await recoverRun(v, fs, src, v.doneSeq - back, 'reflink', crcs, 'changed', back <= 100 ? REPEATS : 1));
    if (copyAges.includes(back)) rows.push(await recoverRun(v, fs, src, v.doneSeq - back, 'copy', crcs));
  }
}

/** The copy fallback on a filesystem without reflink: the replica and the newest segments copied to ext4. */
async function ext4Case(dir: string, v: BenchVolume, ages: number[], crcs: Map<number, number>, rows: RecoveryRow[], cps: CpRow[]): Promise<void> {
  const oldest = Math.max(...ages);
  const chain = v.retention.chainAfter(v.doneSeq - oldest);
  const chainBytes = chain.reduce((n, s) => n + s.bytes, 0);
  const sizeMiB = Math.ceil((3 * v.sizeBytes + chainBytes) / MiB) + 512;
  console.log(`\n  ext4 (${sizeMiB} MiB, no reflink): the replica and its newest ${chain.length} segments copied there`);
  const fs = await makeFs(dir, 'ext4', 'ext4', sizeMiB);
  const replicaPath = path.join(fs.mnt, 'replica.img');
  await fsp.copyFile(v.replicaPath, replicaPath);
  const retDir = path.join(fs.mnt, 'retention');
  await fsp.mkdir(retDir);
  for (const s of chain) await fsp.copyFile(s.file, path.join(retDir, path.basename(s.file)));
  const retention = new RetentionLog(retDir, v.id, { sizeBytes: v.sizeBytes, blockSize: 4096 }, KEEP_ALL, silentLogger());
  await retention.open();
  const src: RecoverySource = { ...v.source(), replicaPath, retention, hold: (fn) => fn() };
  for (const back of ages) rows.push(await recoverRun(v, fs, src, v.doneSeq - back, 'auto', crcs));
  cps.push(...(await cpRows(v, replicaPath, fs, ['never'])));
  teardownSystem(fs.mnt);
  await fsp.rm(fs.image, { force: true });
}

/** Part 3: one workload on a clone of `base`, its segment bytes before and after a thinning pass. */
async function retentionCase(root: string, base: BenchVolume, fs: Fs, spec: WorkloadSpec, diffs: number): Promise<RetentionRow> {
  const v = await BenchVolume.create(path.join(root, `compact-${spec.name}`), `compact-${spec.name}`, base.sizeBytes, { policy: THIN, maxBytes: null, onFull: 'purge' }, base);
  try {
    const wl = new Workload(spec, 97);
    const now = Date.now();
    const atMs = (seq: number): number => now - (diffs + 1 - seq) * 60_000; // one point a minute, the newest now
    const crcs = new Map<number, number>();
    await advance(v, fs, wl, 1, atMs, true, [1], crcs); // the first point: nothing before it to keep
    const runs = await advance(v, fs, wl, 1 + diffs, atMs, true, [], crcs);
    const run: ApplyRun = runs.reduce((a, r) => ({ ...a, toSeq: r.toSeq, diffs: a.diffs + r.diffs, dataBytes: a.dataBytes + r.dataBytes, seconds: a.seconds + r.seconds, cpuSeconds: a.cpuSeconds + r.cpuSeconds, beforeApplySeconds: a.beforeApplySeconds + r.beforeApplySeconds, segmentBytes: a.segmentBytes + r.segmentBytes }));
    const src = v.source();
    const pointsBefore = v.retention.points(v.doneSeq, currentPoint(v.store.state)).length;
    const segBefore = v.retention.bytes;
    const recBefore = await recoverRun(v, fs, src, 1, 'reflink', crcs);
    const m0 = Date.now();
    const m = await timed(() => v.retention.maintain(m0, v.doneSeq, currentPoint(v.store.state)));
    if (v.retention.stats.lastError) throw new Error(`maintenance of ${v.id} failed: ${v.retention.stats.lastError}`);
    const recAfter = await recoverRun(v, fs, src, 1, 'reflink', crcs);
    const segAfter = v.retention.bytes;
    const pointsAfter = v.retention.points(v.doneSeq, currentPoint(v.store.state)).length;
    const segmentsAfter = v.retention.segments.length;
    const merged = v.retention.segments.filter((x) => x.toSeq > x.fromSeq);
    const mergedDataBytes = merged.reduce((sum, x) => sum + [...v.dataBytes].filter(([q]) => q >= x.fromSeq && q <= x.toSeq).reduce((a, [, b]) => a + b, 0), 0);
    const row: RetentionRow = {
      mergedBytes: merged.reduce((a, x) => a + x.bytes, 0), mergedDataBytes,
      workload: spec.name, regionBytes: spec.regionBytes, volumeBytes: v.sizeBytes, diffs, dataBytes: run.dataBytes, apply: run,
      segBefore, segAfter, pointsBefore, pointsAfter, segmentsBefore: diffs, segmentsAfter, compactions: v.retention.stats.compactions, maintainSeconds: m.seconds, recBefore, recAfter,
      incremental: await agingPasses(v, m0, atMs),
    };
    console.log(`    ${spec.name}: segments/changed ${(segBefore / row.dataBytes).toFixed(3)} before, ${(row.segAfter / row.dataBytes).toFixed(3)} after thinning ${pointsBefore} -> ${row.pointsAfter} points (${m.seconds.toFixed(1)} s)`);
    return row;
  } finally {
    await v.close();
    await fsp.rm(v.dir, { recursive: true, force: true });
  }
}

/**
 * What the daemon's periodic maintenance does as time passes: one pass per simulated minute after the
 * first, each thinning the point that just aged out of the "every point" window. Counts the segment bytes
 * compaction writes (new segment files) and reads (files it replaced) against the differential data of
 * the points that aged out: each pass merges the one new segment into the growing merged one.
 */
async function agingPasses(v: BenchVolume, m0: number, atMs: (seq: number) => number): Promise<RetentionRow['incremental']> {
  let writtenBytes = 0;
  let readBytes = 0;
  let seconds = 0;
  for (let k = 1; k <= AGING_PASSES; k++) {
    const before = new Map(v.retention.segments.map((x) => [x.file, x.bytes]));
    const t = await timed(() => v.retention.maintain(m0 + k * 60_000, v.doneSeq, currentPoint(v.store.state)));
    if (v.retention.stats.lastError) throw new Error(`maintenance of ${v.id} failed: ${v.retention.stats.lastError}`);
    seconds += t.seconds;
    const after = new Set(v.retention.segments.map((x) => x.file));
    for (const x of v.retention.segments) if (!before.has(x.file)) writtenBytes += x.bytes;
    for (const [file, bytes] of before) if (!after.has(file)) readBytes += bytes;
  }
  // Points that left the window of every point during the passes (their segments got merged).
  const window = THIN.tiers[0]!.afterMs;
  const agedDataBytes = [...v.dataBytes].filter(([q]) => atMs(q) < m0 + AGING_PASSES * 60_000 - window && atMs(q) >= m0 - window).reduce((a, [, b]) => a + b, 0);
  console.log(`    ${v.id}: ${AGING_PASSES} passes a simulated minute apart wrote ${(writtenBytes / MiB).toFixed(0)} MiB of merged segments (read ${(readBytes / MiB).toFixed(0)} MiB) for ${(agedDataBytes / MiB).toFixed(0)} MiB of differential data aged out, in ${seconds.toFixed(1)} s`);
  return { passes: AGING_PASSES, writtenBytes, readBytes, seconds, agedDataBytes, finalBytes: v.retention.bytes };
}

/** copyVolume's all-zero test (Array.prototype.every over a 4 MiB chunk) against Buffer.equals, for the notes. */
function zeroScan(): { everyMs: number; equalsMs: number } {
  const buf = Buffer.alloc(4 * MiB);
  const zero = Buffer.alloc(4 * MiB);
  let t0 = performance.now();
  for (let i = 0; i < 3; i++) if (!buf.every((b) => b === 0)) throw new Error('not zero');
  const everyMs = (performance.now() - t0) / 3;
  t0 = performance.now();
  for (let i = 0; i < 30; i++) if (!buf.equals(zero)) throw new Error('not zero');
  return { everyMs, equalsMs: (performance.now() - t0) / 30 };
}

async function run(): Promise<BenchResult> {
  requirements();
  const small = benchSizeMiB(256, 'room for the hot region and the 1-4 MiB differentials') * MiB;
  const big = 4 * small;
  const n = historyLength();
  const ages = agesFor(n);
  const dir = path.join(WORK_DIR, 'recovery');
  teardownSystem(dir); // an interrupted run may have left mounts or loop devices
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  // Peak use is the big phase: replica, its segments, a copied output and a cp; the image is sparse.
  const segPerDiff = ((MIN_CHANGE + MAX_CHANGE) / 2) * 1.05;
  const xfsMiB = Math.ceil((3 * big + small + segPerDiff * (2 * n + STAGE_CHUNK + 3 * BATCH + 2 * COMPACT_DIFFS)) / MiB) + 2048;
  const free = await fsp.statfs(dir);
  const need = 3 * big + segPerDiff * (n + STAGE_CHUNK) + 2 * GiB;
  if (free.bavail * free.bsize < need) throw new Error(`recovery needs about ${(need / GiB).toFixed(1)} GiB free under ${dir}; ${((free.bavail * free.bsize) / GiB).toFixed(1)} GiB are`);

  const recRows: RecoveryRow[] = [];
  const cps: CpRow[] = [];
  const applies: ApplyRow[] = [];
  const retention: RetentionRow[] = [];
  const setup: Record<string, number> = {};
  const extents: number[] = [];
  let copyLoops = { bytes: 0, freshSeconds: NaN, reusedSeconds: NaN };
  const t0 = Date.now();
  const atMs = (total: number) => (seq: number): number => t0 - (total - seq) * CYCLE_MS;
  const done = (v: BenchVolume, what: string): void => {
    setup[`${what}: staging differentials (HrlWriter + LZ4, not in any apply figure)`] = v.stageSeconds;
    extents.push(...v.extents.values());
  };
  try {
    console.log(`setup: XFS (reflink) in a ${xfsMiB} MiB sparse image on a direct-I/O loop device`);
    const xfs = await makeFs(dir, 'xfs', 'xfs', xfsMiB);

    // ---- the 4x volume: a first point, then n differentials with retention; recoveries, references
    console.log(`\n1. ${big / GiB} GiB replica: ${BATCH} differentials without retention, then ${n} with it`);
    let s = await timed(() => BenchVolume.create(path.join(xfs.mnt, 'big'), 'big', big, KEEP_ALL));
    const vb = s.value;
    setup[`create and hash the ${big / GiB} GiB replica`] = s.seconds;
    const wlBig = new Workload(spread(big), 1);
    const crcBig = new Map<number, number>();
    const totalBig = BATCH + n;
    // The last differential without retention is the first point; retention keeps before-images from the next one on.
    for (const r of await advance(vb, xfs, wlBig, BATCH, atMs(totalBig), false, [], crcBig)) applies.push({ label: 'OFF #1', volumeBytes: big, run: r });
    for (const r of await advance(vb, xfs, wlBig, totalBig, atMs(totalBig), true, [totalBig - 100, totalBig - 10], crcBig)) applies.push({ label: 'history', volumeBytes: big, run: r });
    await recoveries(vb, xfs, ages, [ages[0]!], crcBig, recRows);
    cps.push(...(await cpRows(vb, vb.replicaPath, xfs, ['never', 'always'])));
    done(vb, `${big / GiB} GiB`);
    await vb.close();
    await fsp.rm(vb.dir, { recursive: true, force: true });

    // ---- the 1x volume: OFF, ON, OFF, then ON for the history
    console.log(`\n2. ${small / GiB} GiB replica: apply OFF #1, ON #1, OFF #2, ON #2 (${BATCH} each; ON #2 starts the history of ${n})`);
    s = await timed(() => BenchVolume.create(path.join(xfs.mnt, 'small'), 'small', small, KEEP_ALL));
    const vs = s.value;
    setup[`create and hash the ${small / GiB} GiB replica`] = s.seconds;
    const wlSmall = new Workload(spread(small), 2);
    const crcSmall = new Map<number, number>();
    const totalSmall = 3 * BATCH + n;
    const at = atMs(totalSmall);
    const order: Array<[string, boolean]> = [['OFF #1', false], ['ON #1', true], ['OFF #2', false]];
    for (const [i, [label, on]] of order.entries()) {
      for (const r of await advance(vs, xfs, wlSmall, (i + 1) * BATCH, at, on, [], crcSmall)) applies.push({ label, volumeBytes: small, run: r });
    }
    const hist = await advance(vs, xfs, wlSmall, totalSmall, at, true, [4 * BATCH, totalSmall - 100, totalSmall - 10], crcSmall);
    applies.push({ label: 'ON #2', volumeBytes: small, run: hist[0]! });
    for (const r of hist.slice(1)) applies.push({ label: 'history', volumeBytes: small, run: r });
    await recoveries(vs, xfs, ages, ages, crcSmall, recRows);
    const mid = ages.includes(100) ? 100 : ages[0]!;
    recRows.push(await recoverRun(vs, xfs, vs.source(), vs.doneSeq - mid, 'reflink', crcSmall, 'full'));
    cps.push(...(await cpRows(vs, vs.replicaPath, xfs, ['never', 'always'])));
    const loopBytes = Math.min(small, 512 * MiB);
    copyLoops = { bytes: loopBytes, freshSeconds: await copyLoop(xfs.mnt, vs.replicaPath, path.join(xfs.mnt, 'copy-loop.img'), loopBytes, true), reusedSeconds: await copyLoop(xfs.mnt, vs.replicaPath, path.join(xfs.mnt, 'copy-loop.img'), loopBytes, false) };
    console.log(`    copyVolume's loop over ${loopBytes / MiB} MiB: ${copyLoops.freshSeconds.toFixed(2)} s with a new buffer per chunk, ${copyLoops.reusedSeconds.toFixed(2)} s with one reused`);
    await ext4Case(dir, vs, ages.filter((a) => a <= 100), crcSmall, recRows, cps);

    // ---- part 3 on clones of the 1x replica
    const cd = Math.min(COMPACT_DIFFS, n);
    console.log(`\n3. retention bytes per changed byte: ${cd} differentials, one a minute, spread vs a ${HOT_BYTES / MiB} MiB hot region; then thinning`);
    for (const spec of [spread(small), hot(small)]) retention.push(await retentionCase(xfs.mnt, vs, xfs, spec, cd));
    done(vs, `${small / GiB} GiB`);
    await vs.close();
  } finally {
    teardownSystem(dir);
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') await fsp.rm(dir, { recursive: true, force: true });
  }
  const zs = zeroScan();
  return report({
    params: {
      volumeBytes: [small, big], blockSize: 4096, historyDiffs: n, pointsBack: ages, copyPathPointsBack: { [small]: ages, [big]: [ages[0]] }, applyBatch: BATCH, changePerDiffBytes: [MIN_CHANGE, MAX_CHANGE], hotRegionBytes: HOT_BYTES,
      compactDiffs: Math.min(COMPACT_DIFFS, n), thinningPolicy: THIN, cycleMs: CYCLE_MS, mkfsXfs: version('mkfs.xfs', '-V'), cp: version('cp', '--version'),
      loop: 'losetup --direct-io=on over a sparse image in bench/work/recovery', path: 'in-process: Applier + DiffStore + RetentionLog + recoverPoint (master-target/*.ts)',
    },
    recRows, cps, applies, retention, setup, zeroScan: zs, copyLoops, extentsPerDiff: extents, wallSeconds: (Date.now() - t0) / 1000,
  });
}
