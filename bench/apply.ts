// The master target's applier alone, on scattered 4 KiB extents: staged differentials (the receiver's
// work done) applied to a sparse replica, with retention off and on, against two same-run references on
// the same filesystem: a plain loop writing each differential's extents with one native writeMany and an
// fdatasync (the floor), and the same with one awaited positional write per extent (the applier's write
// pattern before writeMany). Reports MB/s of extent data and the ratios.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { crc } from '../common/checksum.js';
import { silentLogger } from '../common/log.js';
import { Applier } from '../master-target/applier.js';
import { Replica } from '../master-target/replica.js';
import { ReplicaHashes } from '../master-target/replica-hashes.js';
import { RetentionLog } from '../master-target/retention/retention-log.js';
import { DiffStore } from '../proto/diff-store.js';
import { HrlWriter } from '../proto/hrl.js';
import { fmt, MiB, WORK_DIR, type BenchResult, type Benchmark, type Figure } from './harness.js';
import { type MtVolumeState } from '../master-target/volume-state.js';

const BS = 4096;
const SIZE = 1024 * MiB;
const DIFFS = 24;
const EXTENTS = 2048; // 8 MiB of 4 KiB extents per differential: about a second of 8k IOPS of churn
const log = silentLogger();

export const applyBench: Benchmark = {
  description: 'master target applier on scattered 4 KiB extents (retention off / on) vs a plain writeMany + fdatasync loop and a per-extent write loop on the same filesystem',
  run,
};

type Diff = Array<{ offset: number; data: Buffer }>;

function makeDiffs(): Diff[] {
  const out: Diff[] = [];
  for (let d = 0; d < DIFFS; d++) {
    const offs = new Set<number>();
    while (offs.size < EXTENTS) offs.add(Math.floor(Math.random() * (SIZE / BS)) * BS);
    out.push([...offs].map((offset) => ({ offset, data: randomBytes(BS) })));
  }
  return out;
}

async function applier(dir: string, diffs: Diff[], retention: boolean): Promise<number> {
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const store = new DiffStore<MtVolumeState>(dir, 'v', log);
  await store.open();
  await store.adopt({ volumeId: 'v', sizeBytes: SIZE, blockSize: BS, replicationId: 'r' });
  const replica = await Replica.createSparse(path.join(dir, 'replica.img'), SIZE);
  const hashes = new ReplicaHashes(dir, SIZE, BS, log);
  await hashes.initZero();
  for (const [i, diff] of diffs.entries()) {
    const seq = i + 1;
    const w = await HrlWriter.create(dir, { volumeId: 'v', seq, startTimeMs: seq, endTimeMs: seq, volumeSize: SIZE, blockSize: BS, consistency: 'CRASH', flags: 0, tags: [] });
    for (const e of diff) await w.append({ offset: e.offset, length: BS, crc32c: crc(e.data), compression: 'NONE', storedLength: BS }, e.data);
    await w.commit();
    await store.added(seq);
  }
  const ret = retention ? new RetentionLog(path.join(dir, 'retention'), 'v', { sizeBytes: SIZE, blockSize: BS }, { policy: { windowMs: 1e12, appWindowMs: 1e12, tiers: [], pinTags: [] }, maxBytes: null, onFull: 'purge' }, log) : null;
  await ret?.open();
  const a = new Applier('v', store, replica, hashes, { applied: () => {}, damaged: async () => {} }, log, ret);
  const t0 = process.hrtime.bigint();
  await a.kick();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (store.doneSeq !== diffs.length) throw new Error(`applied ${store.doneSeq} of ${diffs.length}`);
  await a.close();
  await replica.close();
  return s;
}

async function plain(dir: string, diffs: Diff[], perExtent: boolean): Promise<number> {
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const replica = await Replica.createSparse(path.join(dir, 'replica.img'), SIZE);
  const fh = await fsp.open(path.join(dir, 'replica.img'), 'r+');
  const t0 = process.hrtime.bigint();
  for (const diff of diffs) {
    if (perExtent) for (const e of diff) await fh.write(e.data, 0, BS, e.offset);
    else await replica.writeMany(diff.map((e) => e.offset), diff.map((e) => e.data));
    await fh.datasync();
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await fh.close();
  await replica.close();
  return s;
}

async function run(): Promise<BenchResult> {
  const dir = path.join(WORK_DIR, 'apply');
  const diffs = makeDiffs();
  const mb = (DIFFS * EXTENTS * BS) / 1e6;
  const rows: Array<[string, number]> = [];
  // Alternated twice; each figure is the better of its two runs (the machine is shared).
  const cases: Array<[string, () => Promise<number>]> = [
    ['plain writeMany + fdatasync per differential', () => plain(path.join(dir, 'plain'), diffs, false)],
    ['per-extent awaited write + fdatasync per differential', () => plain(path.join(dir, 'each'), diffs, true)],
    ['applier, retention off', () => applier(path.join(dir, 'off'), diffs, false)],
    ['applier, retention on', () => applier(path.join(dir, 'on'), diffs, true)],
  ];
  const best = new Map<string, number>();
  for (let round = 0; round < 2; round++) {
    for (const [name, fn] of cases) {
      const s = await fn();
      console.log(`  ${name}: ${fmt(mb / s, 1)} MB/s (${fmt(s, 2)} s)`);
      best.set(name, Math.max(best.get(name) ?? 0, mb / s));
    }
  }
  await fsp.rm(dir, { recursive: true, force: true });
  for (const [name] of cases) rows.push([name, best.get(name)!]);
  const figures: Figure[] = rows.map(([name, v]) => ({ name, value: v, unit: 'MB/s' }));
  const ref = best.get(cases[0]![0])!;
  return {
    params: { volumeBytes: SIZE, differentials: DIFFS, extentsPerDifferential: EXTENTS, extentBytes: BS },
    figures,
    references: [],
    quoted: [],
    ratios: [
      { name: 'applier retention off / plain writeMany loop', numerator: cases[2]![0], denominator: cases[0]![0], value: best.get(cases[2]![0])! / ref },
      { name: 'applier retention on / plain writeMany loop', numerator: cases[3]![0], denominator: cases[0]![0], value: best.get(cases[3]![0])! / ref },
      { name: 'applier retention on / off', numerator: cases[3]![0], denominator: cases[2]![0], value: best.get(cases[3]![0])! / best.get(cases[2]![0])!, target: 0.9 },
      { name: 'per-extent write loop / plain writeMany loop', numerator: cases[1]![0], denominator: cases[0]![0], value: best.get(cases[1]![0])! / ref },
    ],
    table: [['case', 'MB/s', 'vs plain writeMany loop'], ...rows.map(([n, v]) => [n, fmt(v, 1), fmt(v / ref, 3)])],
    notes: [`${DIFFS} staged differentials of ${EXTENTS} distinct random 4 KiB extents (uncompressed) on a ${SIZE / MiB} MiB sparse replica under bench/work/apply; the applier applies them all from one kick (group commit). Best of two alternated runs each. The machine is shared: compare ratios.`],
  };
}
