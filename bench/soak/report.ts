// The soak's table and its results file (bench/results/soak.json, in the benchmarks' format).
import { formatTable, type BenchResult, type Figure } from '../harness.js';
import { FAULT_KINDS } from './faults.js';
import type { SoakRun } from './soak.js';

export function passed(r: SoakRun): boolean {
  const v = r.verdict;
  return r.converged && v.bytesLost === 0 && v.replicaEqualsSource && v.pointsFailed.length === 0 && v.pointsChecked + v.pointsThinnedDuringCheck === v.pointsListed && v.pointsOutOfOrder === 0 && v.missingEvidence.length === 0 && r.unexpectedExits.length === 0;
}

/** Why a run failed, one line each; empty when it passed. */
export function problems(r: SoakRun): string[] {
  const v = r.verdict;
  const out: string[] = [];
  if (!r.converged) out.push('the pipeline did not converge after the faults were healed');
  if (!v.replicaEqualsSource) out.push('the replica differs from the source');
  if (v.replicaBadBlocks > 0 || v.sourceBadBlocks > 0) out.push(`blocks not holding the writer's last write: replica ${v.replicaBadBlocks}, source ${v.sourceBadBlocks}; ${v.examples.join('; ')}`);
  for (const p of v.pointsFailed) out.push(`point #${p.seq}: ${p.error ?? `${p.badBlocks} blocks break prefix closure (newest write #${p.newest}): ${p.examples.join('; ')}`}`);
  if (v.pointsChecked + v.pointsThinnedDuringCheck !== v.pointsListed) out.push(`only ${v.pointsChecked} of ${v.pointsListed} listed points checked`);
  if (v.pointsOutOfOrder > 0) out.push(`${v.pointsOutOfOrder} points have a capture time before the previous point's`);
  out.push(...v.missingEvidence, ...r.unexpectedExits);
  return out;
}

export function toResult(r: SoakRun, machineNote: string): BenchResult {
  const v = r.verdict;
  const byKind = (k: string): number => r.faults.filter((f) => f.kind === k).length;
  const figures: Figure[] = [
    { name: 'bytes lost', value: v.bytesLost, unit: 'bytes' },
    { name: 'faults injected', value: r.faults.length, unit: 'faults' },
    { name: 'points checked', value: v.pointsChecked, unit: 'points' },
    { name: 'minutes', value: r.minutes, unit: 'minutes' },
    ...r.kinds.map((k) => ({ name: `faults: ${k}`, value: byKind(k), unit: 'faults' })),
    { name: 'points listed', value: v.pointsListed, unit: 'points' },
    { name: 'points failed', value: v.pointsFailed.length, unit: 'points' },
    { name: 'points out of order', value: v.pointsOutOfOrder, unit: 'points' },
    { name: 'bytes re-sent', value: r.bytesResent, unit: 'bytes' },
    { name: 'resyncs', value: r.resyncs, unit: 'resyncs' },
    { name: 'writes', value: r.writes, unit: 'writes' },
    { name: 'bytes written', value: r.bytesWritten, unit: 'bytes' },
    { name: 'replica equals source', value: v.replicaEqualsSource, unit: 'check' },
    { name: 'converged', value: r.converged, unit: 'check' },
    { name: 'passed', value: passed(r), unit: 'check' },
  ];
  const table = [
    ['fault kind', 'injected'],
    ...FAULT_KINDS.map((k) => [k, r.kinds.includes(k) ? String(byKind(k)) : 'off']),
    ['(re-chunking)', 'always'],
    ['total', String(r.faults.length)],
    [],
    ['outcome', 'value'],
    ['minutes', String(r.minutes)],
    ['writes', String(r.writes)],
    ['bytes written', String(r.bytesWritten)],
    ['points checked', `${v.pointsChecked} of ${v.pointsListed}${v.pointsThinnedDuringCheck ? ` (${v.pointsThinnedDuringCheck} thinned meanwhile)` : ''}`],
    ['points failed', String(v.pointsFailed.length)],
    ['bytes re-sent', String(r.bytesResent)],
    ['resyncs', String(r.resyncs)],
    ['daemon restarts after refusing to start', String(r.refusedStarts.length)],
    ['replica equals source', v.replicaEqualsSource ? 'yes' : 'NO'],
    ['bytes lost', String(v.bytesLost)],
  ];
  return {
    params: { seed: r.seed, kinds: r.kinds, replay: `npm run soak -- --minutes ${r.minutes} --seed ${r.seed} --faults ${r.kinds.join(',')}` },
    figures,
    references: [],
    quoted: [],
    ratios: [],
    table,
    notes: [machineNote, ...problems(r), ...r.refusedStarts.map((x) => `refused to start, restarted: ${x}`), ...r.faults.map((f) => `${new Date(f.atMs).toISOString()} ${f.kind}: ${f.detail}`)],
  };
}

/** The table as printed: the fault rows, a blank line, the outcome rows. */
export function printTable(res: BenchResult): string {
  const split = res.table.findIndex((row) => row.length === 0);
  return `${formatTable(res.table.slice(0, split))}\n\n${formatTable(res.table.slice(split + 1))}`;
}
