// The recovery benchmark's figures, references, ratios, table and notes from its measured rows.
import type { RecoverResult } from '../master-target/recover.js';
import { fmt, GiB, MiB, type BenchResult, type Figure, type Ratio, type Reference } from './harness.js';
import type { CpRun } from './recovery-system.js';
import type { ApplyRun } from './recovery-workload.js';

export interface RecoveryRow {
  fs: 'xfs' | 'ext4';
  volumeBytes: number;
  back: number;
  seq: number;
  /** What was asked: reflink (the default), copy (copy: true), auto (default on a filesystem without reflink). */
  requested: 'reflink' | 'copy' | 'auto';
  method: RecoverResult['method'];
  verify: 'changed' | 'full';
  ms: RecoverResult['ms'];
  /** CPU (user + system) of this process during the recovery, and the 1-minute load when it started. */
  cpuSeconds: number;
  cpuSystemSeconds: number;
  load: number;
  /** Total seconds of every repetition; `ms` is the median one's. */
  samplesSeconds: number[];
  rolledBackBytes: number;
  segments: number;
  chainBytes: number;
  /** Differential data applied since the point (blocks changed twice count twice). */
  changedBytes: number;
  ok: boolean;
  /** Bytes of the first segment still cached after the cache drop (fincore), to show the drop worked. */
  cachedAfterDrop: number;
}

export interface CpRow {
  fs: 'xfs' | 'ext4';
  volumeBytes: number;
  mode: 'never' | 'always';
  run: CpRun;
}

export interface ApplyRow {
  label: string;
  volumeBytes: number;
  run: ApplyRun;
}

export interface RetentionRow {
  /** The merged segments alone: their bytes, and the differential data of the differentials they replace. */
  mergedBytes: number;
  mergedDataBytes: number;
  workload: string;
  regionBytes: number;
  volumeBytes: number;
  diffs: number;
  dataBytes: number;
  apply: ApplyRun;
  segBefore: number;
  segAfter: number;
  pointsBefore: number;
  pointsAfter: number;
  segmentsBefore: number;
  segmentsAfter: number;
  compactions: number;
  maintainSeconds: number;
  recBefore: RecoveryRow;
  recAfter: RecoveryRow;
  /** Later passes, one a simulated minute apart: what compaction writes and reads as points age out. */
  incremental: { passes: number; writtenBytes: number; readBytes: number; seconds: number; agedDataBytes: number; finalBytes: number };
}

export interface Measured {
  params: Record<string, unknown>;
  recRows: RecoveryRow[];
  cps: CpRow[];
  applies: ApplyRow[];
  retention: RetentionRow[];
  setup: Record<string, number>;
  zeroScan: { everyMs: number; equalsMs: number };
  copyLoops: { bytes: number; freshSeconds: number; reusedSeconds: number };
  extentsPerDiff: number[];
  wallSeconds: number;
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const gib = (b: number): string => (b >= GiB ? `${fmt(b / GiB, 0)} GiB` : `${fmt(b / MiB, 0)} MiB`);
const mbps = (bytes: number, s: number): number => bytes / MiB / s;

/** Sum of apply runs under one label. */
function total(runs: ApplyRun[]): ApplyRun {
  return runs.reduce((a, r) => ({ ...a, toSeq: r.toSeq, diffs: a.diffs + r.diffs, dataBytes: a.dataBytes + r.dataBytes, seconds: a.seconds + r.seconds, cpuSeconds: a.cpuSeconds + r.cpuSeconds, beforeApplySeconds: a.beforeApplySeconds + r.beforeApplySeconds, segmentBytes: a.segmentBytes + r.segmentBytes }));
}

export function report(x: Measured): BenchResult {
  const figures: Figure[] = [];
  const references: Reference[] = [];
  const ratios: Ratio[] = [];
  const notes: string[] = [];
  const table: string[][] = [['case', 'volume', 'back', 'changed MiB', 'seconds', 'MB/s', 'vs ref', 'detail']];

  // ---- references: cp of the replica, cold; the table shows them beside the recoveries of the same volume
  const part1: string[][] = []; // first cell: the group key, dropped when printed
  const cpOf = (fs: string, vol: number, mode: string): CpRow | undefined => x.cps.find((c) => c.fs === fs && c.volumeBytes === vol && c.mode === mode);
  for (const c of x.cps) {
    const s = c.run.copySeconds + c.run.syncSeconds;
    const name = `cp --reflink=${c.mode} of the ${gib(c.volumeBytes)} replica on ${c.fs}`;
    references.push({
      name,
      description: `coreutils cp --reflink=${c.mode} of the replica from a cold cache, then sync of the copy (the recovery fsyncs its output too); filefrag counted ${c.run.sharedExtents} shared extents in the copy`,
      figures: [
        { name: `${name}: copy`, value: c.run.copySeconds, unit: 's' },
        { name: `${name}: sync`, value: c.run.syncSeconds, unit: 's' },
        { name: `${name}: copy + sync`, value: s, unit: 's' },
        { name: `${name}: CPU of cp and sync`, value: c.run.cpuSeconds, unit: 's' },
        { name: `${name}: shared extents in the copy`, value: c.run.sharedExtents, unit: 'count' },
      ],
    });
    part1.push([`${c.fs} ${c.volumeBytes}`, `cp --reflink=${c.mode} + sync`, `${gib(c.volumeBytes)} ${c.fs}`, '-', '-', fmt(s, 2), fmt(mbps(c.volumeBytes, s), 0), c.mode === 'never' ? '1.00' : '-', `copy ${fmt(c.run.copySeconds, 2)} s + sync ${fmt(c.run.syncSeconds, 2)} s; CPU ${fmt(c.run.cpuSeconds, 2)} s; ${c.run.sharedExtents} shared extents`]);
  }

  // ---- part 1: recoveries
  for (const r of x.recRows) {
    const L = `[recover ${r.fs} ${gib(r.volumeBytes)} ${r.back} back, ${r.requested}${r.verify === 'full' ? ', verify full' : ''}]`;
    const ref = cpOf(r.fs, r.volumeBytes, 'never');
    const refS = ref ? ref.run.copySeconds + ref.run.syncSeconds : NaN;
    figures.push(
      { name: `${L} method used`, value: r.method, unit: 'text' },
      { name: `${L} total${r.samplesSeconds.length > 1 ? ` (median of ${r.samplesSeconds.length})` : ''}`, value: r.ms.total / 1000, unit: 's' },
      { name: `${L} total of every run`, value: r.samplesSeconds.map((v) => v.toFixed(3)).join(' '), unit: 's' },
      { name: `${L} CPU (user + system) of the recovering process`, value: r.cpuSeconds, unit: 's' },
      { name: `${L} of which system (kernel: reads, copy-on-write, fsync)`, value: r.cpuSystemSeconds, unit: 's' },
      { name: `${L} 1-minute load average at start`, value: r.load, unit: 'load' },
      { name: `${L} clone (applier held)`, value: r.ms.clone / 1000, unit: 's' },
      { name: `${L} rollback (read segments, write before-images, fsync)`, value: r.ms.rollback / 1000, unit: 's' },
      { name: `${L} verify (${r.verify})`, value: r.ms.verify / 1000, unit: 's' },
      { name: `${L} distinct bytes rolled back`, value: r.rolledBackBytes, unit: 'bytes' },
      { name: `${L} differential data applied since the point`, value: r.changedBytes, unit: 'bytes' },
      { name: `${L} segments read`, value: r.segments, unit: 'count' },
      { name: `${L} segment bytes read`, value: r.chainBytes, unit: 'bytes' },
      { name: `${L} seconds per GiB rolled back`, value: r.ms.total / 1000 / (r.rolledBackBytes / GiB), unit: 's/GiB' },
      { name: `${L} recovered image equals the replica at the point (crc32c)`, value: r.ok, unit: 'bool' },
      { name: `${L} bytes of the oldest segment in the page cache after dropping it`, value: r.cachedAfterDrop, unit: 'bytes' },
    );
    const kind = r.fs === 'ext4' ? 'recover, ext4 (no reflink: copy fallback)' : r.requested === 'copy' ? 'recover, copy path' : `recover, reflink path${r.verify === 'full' ? ', verify full' : ''}`;
    part1.push([
      `${r.fs} ${r.volumeBytes}`, kind, `${gib(r.volumeBytes)} ${r.fs}`, String(r.back), fmt(r.rolledBackBytes / MiB, 0), fmt(r.ms.total / 1000, 2), '-', fmt(r.ms.total / 1000 / refS, 2),
      `clone ${fmt(r.ms.clone / 1000, 2)} + rollback ${fmt(r.ms.rollback / 1000, 2)} + verify ${fmt(r.ms.verify / 1000, 2)} s${r.samplesSeconds.length > 1 ? ` (median of ${r.samplesSeconds.length})` : ''}; CPU ${fmt(r.cpuSeconds, 2)} s (sys ${fmt(r.cpuSystemSeconds, 2)}); ${r.segments} segments, ${fmt(r.chainBytes / MiB, 0)} MiB read; load ${fmt(r.load, 1)}; bytes ${r.ok ? 'ok' : 'WRONG'}`,
    ]);
  }
  const groups = [...new Set(part1.map((r) => r[0]!))].sort((a, b) => (a.startsWith('xfs') === b.startsWith('xfs') ? Number(a.split(' ')[1]) - Number(b.split(' ')[1]) : a.startsWith('xfs') ? -1 : 1));
  for (const g of groups) table.push(...part1.filter((r) => r[0] === g).map((r) => r.slice(1)));
  const rec = (fs: string, vol: number, back: number, requested: string, verify = 'changed'): RecoveryRow | undefined => x.recRows.find((r) => r.fs === fs && r.volumeBytes === vol && r.back === back && r.requested === requested && r.verify === verify);
  const vols = [...new Set(x.recRows.map((r) => r.volumeBytes))].sort((a, b) => a - b);
  const ages = [...new Set(x.recRows.filter((r) => r.fs === 'xfs').map((r) => r.back))].sort((a, b) => a - b);
  const [small, big] = [vols[0]!, vols.at(-1)!];
  const lo = ages[0]!;
  const hi = ages.at(-1)!;
  const ratio = (name: string, a: RecoveryRow | undefined, b: RecoveryRow | undefined, what: string): void => {
    if (a && b) ratios.push({ name, numerator: what.replace('%', `${gib(a.volumeBytes)} ${a.back} back ${a.requested}`), denominator: what.replace('%', `${gib(b.volumeBytes)} ${b.back} back ${b.requested}`), value: a.ms.total / b.ms.total });
  };
  for (const v of vols) {
    ratio(`reflink recovery ${gib(v)}: ${hi} back / ${lo} back (grows with the changes since the point)`, rec('xfs', v, hi, 'reflink'), rec('xfs', v, lo, 'reflink'), '[recover xfs %] total');
    const cp = cpOf('xfs', v, 'never');
    const r = rec('xfs', v, lo, 'reflink');
    if (cp && r) ratios.push({ name: `reflink recovery ${lo} back / cp --reflink=never + sync, ${gib(v)}`, numerator: `[recover xfs ${gib(v)} ${lo} back, reflink] total`, denominator: `cp --reflink=never of the ${gib(v)} replica on xfs: copy + sync`, value: r.ms.total / 1000 / (cp.run.copySeconds + cp.run.syncSeconds) });
  }
  for (const a of ages) {
    ratio(`reflink recovery ${a} back: ${gib(big)} / ${gib(small)} (1.0 = independent of the volume size)`, rec('xfs', big, a, 'reflink'), rec('xfs', small, a, 'reflink'), '[recover xfs %] total');
    ratio(`copy-path recovery ${a} back: ${gib(big)} / ${gib(small)}`, rec('xfs', big, a, 'copy'), rec('xfs', small, a, 'copy'), '[recover xfs %] total');
  }
  const full = x.recRows.find((r) => r.verify === 'full');
  const changed = full && rec('xfs', full.volumeBytes, full.back, 'reflink');
  if (full && changed) {
    ratios.push({ name: `verify "full" / verify "changed", ${gib(full.volumeBytes)} ${full.back} back`, numerator: `[recover xfs ${gib(full.volumeBytes)} ${full.back} back, reflink, verify full] verify`, denominator: `[recover xfs ${gib(full.volumeBytes)} ${full.back} back, reflink] verify (changed)`, value: full.ms.verify / changed.ms.verify });
  }

  // ---- part 2: apply throughput
  const labels = ['OFF #1', 'ON #1', 'OFF #2', 'ON #2', 'history'];
  for (const v of vols) {
    const rows = x.applies.filter((a) => a.volumeBytes === v);
    const offMed = median(rows.filter((a) => a.label.startsWith('OFF')).map((a) => mbps(a.run.dataBytes, a.run.seconds)));
    for (const label of labels) {
      const runs = rows.filter((a) => a.label === label).map((a) => a.run);
      if (runs.length === 0) continue;
      const t = total(runs);
      const L = `[apply ${gib(v)} ${label}]`;
      const rate = mbps(t.dataBytes, t.seconds);
      figures.push(
        { name: `${L} differential data applied per second`, value: rate, unit: 'MB/s' },
        { name: `${L} retention`, value: t.retention, unit: 'bool' },
        { name: `${L} differentials`, value: t.diffs, unit: 'count' },
        { name: `${L} differential data`, value: t.dataBytes, unit: 'bytes' },
        { name: `${L} wall time`, value: t.seconds, unit: 's' },
        { name: `${L} CPU (user + system, whole process)`, value: t.cpuSeconds, unit: 's' },
        { name: `${L} CPU per GiB applied`, value: t.cpuSeconds / (t.dataBytes / GiB), unit: 's/GiB' },
        { name: `${L} time in RetentionLog.beforeApply`, value: t.beforeApplySeconds, unit: 's' },
        { name: `${L} segment bytes written`, value: t.segmentBytes, unit: 'bytes' },
      );
      const detail = `${t.diffs} diffs, ${fmt(t.dataBytes / MiB, 0)} MiB; CPU ${fmt(t.cpuSeconds / (t.dataBytes / GiB), 1)} s/GiB${t.retention ? `; beforeApply ${fmt((100 * t.beforeApplySeconds) / t.seconds, 0)}% of the time, segments ${fmt(t.segmentBytes / t.dataBytes, 3)} × data` : ''}`;
      table.push([`apply, retention ${t.retention ? 'ON' : 'OFF'}${label === 'history' ? ' (history)' : ` ${label.split(' ')[1]}`}`, gib(v), '-', fmt(t.dataBytes / MiB, 0), fmt(t.seconds, 1), fmt(rate, 1), fmt(rate / offMed, 2), detail]);
    }
    // Where no ON run alternates with the OFF ones (the 4x volume), the history batches stand in for it.
    const onRows = rows.filter((a) => a.label.startsWith('ON'));
    const onMed = median((onRows.length > 0 ? onRows : rows.filter((a) => a.label === 'history')).map((a) => mbps(a.run.dataBytes, a.run.seconds)));
    if (Number.isFinite(onMed) && Number.isFinite(offMed)) {
      figures.push({ name: `[apply ${gib(v)}] median MB/s retention OFF`, value: offMed, unit: 'MB/s' }, { name: `[apply ${gib(v)}] median MB/s retention ON`, value: onMed, unit: 'MB/s' });
      ratios.push({ name: `apply throughput retention ON / OFF (medians), ${gib(v)}`, numerator: `[apply ${gib(v)}] median MB/s retention ON`, denominator: `[apply ${gib(v)}] median MB/s retention OFF`, value: onMed / offMed });
    }
  }

  // ---- part 3: retention bytes per changed byte
  for (const r of x.retention) {
    const L = `[retention ${r.workload}]`;
    figures.push(
      { name: `${L} write region`, value: r.regionBytes, unit: 'bytes' },
      { name: `${L} differentials`, value: r.diffs, unit: 'count' },
      { name: `${L} differential data (changed bytes)`, value: r.dataBytes, unit: 'bytes' },
      { name: `${L} segment bytes before maintenance`, value: r.segBefore, unit: 'bytes' },
      { name: `${L} segment bytes after thinning and compaction`, value: r.segAfter, unit: 'bytes' },
      { name: `${L} segment bytes per changed byte, before`, value: r.segBefore / r.dataBytes, unit: 'ratio' },
      { name: `${L} segment bytes per changed byte, after`, value: r.segAfter / r.dataBytes, unit: 'ratio' },
      { name: `${L} points before / after`, value: `${r.pointsBefore} / ${r.pointsAfter}`, unit: 'count' },
      { name: `${L} segments before / after`, value: `${r.segmentsBefore} / ${r.segmentsAfter}`, unit: 'count' },
      { name: `${L} compactions`, value: r.compactions, unit: 'count' },
      { name: `${L} maintenance pass`, value: r.maintainSeconds, unit: 's' },
      { name: `${L} segment bytes read per second by the maintenance pass`, value: mbps(r.segBefore, r.maintainSeconds), unit: 'MB/s' },
      { name: `${L} recover the oldest point (reflink), before maintenance`, value: r.recBefore.ms.total / 1000, unit: 's' },
      { name: `${L} recover the oldest point (reflink), after maintenance`, value: r.recAfter.ms.total / 1000, unit: 's' },
      { name: `${L} oldest point recovered correctly before and after`, value: r.recBefore.ok && r.recAfter.ok, unit: 'bool' },
      { name: `${L} apply with retention`, value: mbps(r.apply.dataBytes, r.apply.seconds), unit: 'MB/s' },
    );
    const inc = r.incremental;
    figures.push(
      { name: `${L} merged segments only: bytes per changed byte of the differentials they replace`, value: r.mergedBytes / r.mergedDataBytes, unit: 'ratio' },
      { name: `${L} aging passes (maintain, one per simulated minute)`, value: inc.passes, unit: 'count' },
      { name: `${L} aging passes: differential data of the points that aged out`, value: inc.agedDataBytes, unit: 'bytes' },
      { name: `${L} aging passes: segment bytes written by compaction`, value: inc.writtenBytes, unit: 'bytes' },
      { name: `${L} aging passes: segment bytes read (replaced) by compaction`, value: inc.readBytes, unit: 'bytes' },
      { name: `${L} aging passes: wall time`, value: inc.seconds, unit: 's' },
      { name: `${L} aging passes: compaction bytes written per byte of differential data aged out`, value: inc.writtenBytes / inc.agedDataBytes, unit: 'ratio' },
      { name: `${L} segment bytes after the aging passes`, value: inc.finalBytes, unit: 'bytes' },
    );
    ratios.push({ name: `compaction write amplification while points age one a minute, ${r.workload}`, numerator: `${L} aging passes: segment bytes written by compaction`, denominator: `${L} aging passes: differential data of the points that aged out`, value: inc.writtenBytes / inc.agedDataBytes });
    ratios.push(
      { name: `merged segment bytes / changed bytes they cover, ${r.workload}`, numerator: `${L} merged segment bytes`, denominator: `${L} differential data of the merged differentials`, value: r.mergedBytes / r.mergedDataBytes },
      { name: `segment bytes / changed bytes, ${r.workload}, before compaction`, numerator: `${L} segment bytes before maintenance`, denominator: `${L} differential data (changed bytes)`, value: r.segBefore / r.dataBytes },
      { name: `segment bytes / changed bytes, ${r.workload}, after thinning + compaction`, numerator: `${L} segment bytes after thinning and compaction`, denominator: `${L} differential data (changed bytes)`, value: r.segAfter / r.dataBytes },
    );
    const where = r.regionBytes >= r.volumeBytes ? 'whole volume' : `${fmt(r.regionBytes / MiB, 0)} MiB hot region`;
    table.push([
      `retention bytes, ${r.workload} (${where})`, gib(r.volumeBytes), String(r.diffs), fmt(r.dataBytes / MiB, 0), fmt(r.maintainSeconds, 1), fmt(mbps(r.segBefore, r.maintainSeconds), 0), fmt(r.segAfter / r.dataBytes, 3),
      `segments/changed ${fmt(r.segBefore / r.dataBytes, 3)} -> ${fmt(r.segAfter / r.dataBytes, 3)} (merged part alone ${fmt(r.mergedBytes / r.mergedDataBytes, 3)}); points ${r.pointsBefore} -> ${r.pointsAfter}, segments ${r.segmentsBefore} -> ${r.segmentsAfter}; oldest point recovers in ${fmt(r.recBefore.ms.total / 1000, 2)} -> ${fmt(r.recAfter.ms.total / 1000, 2)} s; bytes ${r.recBefore.ok && r.recAfter.ok ? 'ok' : 'WRONG'}`,
    ]);
    table.push([
      `compaction as points age, ${r.workload}`, gib(r.volumeBytes), String(inc.passes), fmt(inc.agedDataBytes / MiB, 0), fmt(inc.seconds, 1), fmt(mbps(inc.readBytes + inc.writtenBytes, inc.seconds), 0), fmt(inc.writtenBytes / inc.agedDataBytes, 2),
      `${inc.passes} maintain passes a simulated minute apart: ${fmt(inc.writtenBytes / MiB, 0)} MiB written, ${fmt(inc.readBytes / MiB, 0)} MiB read for ${fmt(inc.agedDataBytes / MiB, 0)} MiB aged out; vs ref = written / aged`,
    ]);
  }

  for (const [k, v] of Object.entries(x.setup)) figures.push({ name: `setup: ${k}`, value: v, unit: 's' });
  figures.push(
    { name: 'copyVolume all-zero test (Buffer.every) on a 4 MiB zero chunk', value: x.zeroScan.everyMs, unit: 'ms' },
    { name: 'Buffer.equals against a 4 MiB zero buffer, for comparison', value: x.zeroScan.equalsMs, unit: 'ms' },
    { name: `copyVolume's loop (4 MiB chunks, new Buffer.alloc per chunk) over ${fmt(x.copyLoops.bytes / MiB, 0)} MiB of the replica, cold, fsync'd`, value: x.copyLoops.freshSeconds, unit: 's' },
    { name: `the same loop with one buffer reused`, value: x.copyLoops.reusedSeconds, unit: 's' },
    { name: 'extents per differential (mean): records per segment before compaction', value: x.extentsPerDiff.reduce((a, b) => a + b, 0) / x.extentsPerDiff.length, unit: 'count' },
    { name: 'benchmark wall time', value: x.wallSeconds, unit: 's' },
  );
  table.push(['copyVolume zero test: Buffer.every', '-', '-', '4', fmt(x.zeroScan.everyMs / 1000, 3), fmt(4 / (x.zeroScan.everyMs / 1000), 0), fmt(x.zeroScan.everyMs / x.zeroScan.equalsMs, 0), `per all-zero 4 MiB chunk (free space); vs ref = / Buffer.equals with a zero buffer (${fmt(x.zeroScan.equalsMs, 3)} ms)`]);
  ratios.push({ name: 'copyVolume zero test: Buffer.every / Buffer.equals on a 4 MiB zero chunk', numerator: 'copyVolume all-zero test (Buffer.every) on a 4 MiB zero chunk', denominator: 'Buffer.equals against a 4 MiB zero buffer, for comparison', value: x.zeroScan.everyMs / x.zeroScan.equalsMs });
  ratios.push({ name: 'copy loop with a new buffer per 4 MiB chunk / with one reused buffer', numerator: "copyVolume's loop (new Buffer.alloc per chunk)", denominator: 'the same loop with one buffer reused', value: x.copyLoops.freshSeconds / x.copyLoops.reusedSeconds });
  table.push(['copyVolume loop: new buffer per chunk', gib(vols[0]!), '-', fmt(x.copyLoops.bytes / MiB, 0), fmt(x.copyLoops.freshSeconds, 2), fmt(mbps(x.copyLoops.bytes, x.copyLoops.freshSeconds), 0), fmt(x.copyLoops.freshSeconds / x.copyLoops.reusedSeconds, 2), `as recover.ts copies (Buffer.alloc per 4 MiB read); vs ref = / one reused buffer (${fmt(x.copyLoops.reusedSeconds, 2)} s)`]);
  const wrong = x.recRows.filter((r) => !r.ok).length;

  notes.push(
    'Path measured: the real master target code in-process — DiffStore (staging folder), Applier, ReplicaHashes, RetentionLog and recoverPoint — with no daemons or network. Differentials are written by HrlWriter into the staging folder, each extent stored as the process server stores it (compressExtent: LZ4 when it saves ≥ 5%), and registered with DiffStore.added(seq, null): the applier reads each one back from the file and verifies it, as after a backlog. Apply is timed from kick() to the last differential\'s doneSeq; staging is not timed. "time in beforeApply" comes from a subclass of RetentionLog that times what the apply path waits for before-images (the real RetentionLog batch: add and durable).',
    'Workload: each differential changes 1-4 MiB (uniform), half by small writes (1-4 blocks of 4 KiB at random block offsets) and half by large ones (16-256 blocks), blocks written twice in one differential counted once, coalesced into sorted runs of at most 1 MiB as the agent does; data is half log-like text, half random bytes. Capture times one differential per 5 s (part 3: one a minute). Replicas are fully written files: log text and random data over the first two thirds, zeros after.',
    'Storage: XFS (mkfs.xfs -m reflink=1) and ext4 in sparse images under bench/work/recovery on loop devices with --direct-io=on, so the images are not cached a second time below the filesystem: fsync reaches the VM\'s disk. Before every timed recovery and cp the filesystem is synced (sync -f) and the pages of the replica and of the segments to be read are dropped (posix_fadvise DONTNEED; fincore confirms), so recovery reads history written long ago from the disk, not from memory.',
    '"back" = how many differentials (each a crash-consistent point) the recovered point lies behind the replica. "changed MiB" = distinct bytes rolled back (each block\'s oldest before-image once), which is what the reflink path writes; on the 1 GiB volume 1000 differentials touch most of it. "vs ref" for recoveries = total seconds / (cp --reflink=never + sync of the same replica, cold, same filesystem); for apply rows = MB/s / median MB/s with retention OFF on that volume; for retention rows = segment bytes / changed bytes after the maintenance pass.',
    'cp: coreutils 9 defaults to --reflink=auto, so a plain `cp` on XFS clones instead of copying; the reference is therefore `cp --reflink=never` (filefrag shows 0 shared extents in its copy) and `cp --reflink=always` for the clone alone. On ext4 the recovery is asked with no copy flag: FICLONE fails there and recoverPoint falls back to copying, as on any filesystem without reflink. The ext4 filesystem gets a copy of the replica and of the newest segments only (enough for the ages shown).',
    `Part 3: a reflink clone of the ${gib(small)} replica (and its hash table) per workload, ${x.retention[0]?.diffs ?? '-'} differentials one a minute after a first point, retention policy window 72 h, every point of the last 30 minutes, then the oldest point of each hour (THIN in bench/recovery.ts). One RetentionLog.maintain pass is timed; the oldest point (#1) is recovered before and after it and checked. Then ${x.retention[0]?.incremental.passes ?? '-'} more passes with the clock a minute further each time (maintain(nowMs) takes the time as an argument), as the daemon's periodic maintenance sees points age out of the 30-minute window one a minute: bytes written = sizes of the segment files each pass created, read = sizes of the files it replaced.`,
    `Verify: "changed" reads back every rolled-back range and checks its crc32c; "full" also hashes every block of the output against the point's block hashes. Independently of both, this benchmark compares the crc32c of every recovered image with the crc32c of the replica taken right after the point's differential was applied.${wrong ? ` ${wrong} RECOVERED IMAGES WERE WRONG.` : ' All recovered images matched.'}`,
    `Apply on the ${gib(big)} volume: one OFF run, then the history with retention (its batches give the ON figure). Besides retention, the applier rewrites the replica's whole block hash table (8 bytes per 4 KiB block: ${fmt(big / 512 / MiB, 0)} MiB at ${gib(big)}, ${fmt(small / 512 / MiB, 0)} MiB at ${gib(small)}) and fsyncs it after every differential, which is why the larger volume applies more slowly with retention on or off.`,
    'The machine is shared with other work (2 cores); figures from a loaded run are slower, and the apply ON/OFF comparison uses alternated runs and medians for that reason.',
  );
  return { params: x.params, figures, references, quoted: [], ratios, table, notes };
}
