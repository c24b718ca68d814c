// The verdict at the end of a soak, after the pipeline converged: the replica against the source and
// against the writer's history, every listed recovery point recovered through the master target and
// checked as a prefix-closed state of that history, capture times in order, and the evidence each
// fault had to leave.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Lab } from '../../lab/lab.js';
import { operatorRequest } from '../../common/operator-socket.js';
import { logged } from './evidence.js';
import { checkExact, checkPrefix, diffBlocks, readBlocks } from './check-image.js';
import type { Fault } from './faults.js';
import { Replay } from './history.js';
import { BLOCK } from './stamp.js';
import type { Write } from './writer.js';

export interface PointResult {
  seq: number;
  atMs: number;
  newest: number;
  badBlocks: number;
  examples: string[];
  error?: string;
}

export interface Verdict {
  replicaEqualsSource: boolean;
  /** Blocks of the final replica not holding the last write the writer completed there. */
  replicaBadBlocks: number;
  sourceBadBlocks: number;
  examples: string[];
  pointsListed: number;
  pointsChecked: number;
  /** Listed at the start of the check, thinned by retention before their turn came. */
  pointsThinnedDuringCheck: number;
  pointsFailed: PointResult[];
  /** Points whose capture time is before the previous point's (a source clock stepped back). */
  pointsOutOfOrder: number;
  missingEvidence: string[];
  bytesLost: number;
}

interface Listed { seq: number; atMs: number; consistency: string }

async function listPoints(lab: Lab): Promise<Listed[]> {
  const r = await operatorRequest(lab.stateDirs.mt, 'points', new URLSearchParams({ volume: 'vol1' }), 60_000);
  return (r.points as Listed[]).slice().sort((a, b) => a.seq - b.seq);
}

async function evidence(lab: Lab, f: Fault): Promise<string | null> {
  if (!f.expect) return null;
  for (const d of f.expect.daemons) if (await logged(lab, d, f.logOffsets[d], f.expect.match)) return null;
  return `${f.kind} at ${new Date(f.atMs).toISOString()} (${f.detail}): ${f.expect.what} expected, but nothing at warn or above matching /${f.expect.match}/i in the log of ${f.expect.daemons.join(' or ')}`;
}

export async function check(opts: { lab: Lab; source: string; replica: string; outDir: string; history: readonly Write[]; blocks: number; faults: readonly Fault[]; log(s: string): void }): Promise<Verdict> {
  const { lab, history, blocks } = opts;
  const source = await readBlocks(opts.source, blocks);
  const replica = await readBlocks(opts.replica, blocks);
  const all = new Replay(history, blocks);
  all.advanceAll();
  const src = checkExact(source, all);
  const rep = checkExact(replica, all);
  const differ = diffBlocks(source, replica);
  const examples = [...src.examples.map((e) => `source ${e}`), ...rep.examples.map((e) => `replica ${e}`)];

  const listed = await listPoints(lab);
  opts.log(`checking ${listed.length} recovery points (#${listed[0]?.seq ?? '-'}..#${listed.at(-1)?.seq ?? '-'})`);
  const replay = new Replay(history, blocks);
  const failed: PointResult[] = [];
  let checked = 0;
  let thinned = 0;
  for (const p of listed) {
    const out = path.join(opts.outDir, `point-${p.seq}.img`);
    try {
      await operatorRequest(lab.stateDirs.mt, 'recover', new URLSearchParams({ volume: 'vol1', seq: String(p.seq), out }), 600_000);
    } catch (e) {
      const still = (await listPoints(lab)).some((x) => x.seq === p.seq);
      if (!still) thinned++;
      else failed.push({ seq: p.seq, atMs: p.atMs, newest: 0, badBlocks: blocks, examples: [], error: (e as Error).message });
      continue;
    }
    const v = checkPrefix(await readBlocks(out, blocks), replay);
    await fsp.rm(out, { force: true });
    checked++;
    if (v.badBlocks > 0) failed.push({ seq: p.seq, atMs: p.atMs, ...v });
  }
  let outOfOrder = 0;
  for (let i = 1; i < listed.length; i++) if (listed[i]!.atMs < listed[i - 1]!.atMs) outOfOrder++;

  const missingEvidence: string[] = [];
  for (const f of opts.faults) {
    const miss = await evidence(lab, f);
    if (miss) missingEvidence.push(miss);
  }
  const pointBad = failed.reduce((a, p) => a + p.badBlocks, 0);
  return {
    replicaEqualsSource: differ.length === 0,
    replicaBadBlocks: rep.badBlocks,
    sourceBadBlocks: src.badBlocks,
    examples,
    pointsListed: listed.length,
    pointsChecked: checked,
    pointsThinnedDuringCheck: thinned,
    pointsFailed: failed,
    pointsOutOfOrder: outOfOrder,
    missingEvidence,
    bytesLost: (rep.badBlocks + pointBad) * BLOCK,
  };
}
