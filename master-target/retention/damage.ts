// Recovery points the retention log can no longer recover exactly. A replica block damaged behind the
// master target (a flipped bit, a write from outside Tidemark) is wrong in every point that reads that
// block from the replica or from a before-image taken after the damage: the points from the last
// differential that wrote the block onwards. Their correct content is gone, so they are never listed again
// (docs/FORMAT.md §10.3, docs/OPERATIONS.md §16). Kept in <retention>/damage.json.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileDurable } from '../../common/durable.js';
import { tmError } from '../../common/errors.js';

export const DAMAGE_VERSION = 1;

export interface DamageRecord {
  version: number;
  /** Inclusive ranges of point sequence numbers that would recover damaged bytes. */
  ranges: Array<[number, number]>;
  /** Blocks known damaged in the replica itself (found by a verify) and not yet overwritten. */
  pending: number[];
}

export class Damage {
  record: DamageRecord = { version: DAMAGE_VERSION, ranges: [], pending: [] };
  private readonly file: string;
  private pendingSet = new Set<number>();

  constructor(dir: string) {
    this.file = path.join(dir, 'damage.json');
  }

  async open(): Promise<void> {
    const text = await fsp.readFile(this.file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    if (text === null) return;
    let r: DamageRecord;
    try {
      r = JSON.parse(text) as DamageRecord;
    } catch (e) {
      throw tmError('TM_ERR_STATE_CORRUPT', `${this.file}: ${(e as Error).message}`, { path: this.file });
    }
    if (r.version > DAMAGE_VERSION) throw tmError('TM_ERR_STATE_CORRUPT', `${this.file} is format version ${r.version}; this Tidemark reads up to ${DAMAGE_VERSION} (written by a newer one)`, { path: this.file });
    this.record = { version: DAMAGE_VERSION, ranges: r.ranges ?? [], pending: r.pending ?? [] };
    this.pendingSet = new Set(this.record.pending);
  }

  covers(seq: number): boolean {
    return this.record.ranges.some(([a, b]) => seq >= a && seq <= b);
  }

  isPending(block: number): boolean {
    return this.pendingSet.has(block);
  }

  get pendingCount(): number {
    return this.pendingSet.size;
  }

  /** Record durably: points `from..to` are damaged; `pending` blocks are damaged in the replica, `written` no longer. */
  async add(from: number, to: number, change: { pending?: number[]; written?: number[] } = {}): Promise<void> {
    for (const b of change.pending ?? []) this.pendingSet.add(b);
    for (const b of change.written ?? []) this.pendingSet.delete(b);
    const ranges = from <= to ? [...this.record.ranges, [from, to] as [number, number]] : [...this.record.ranges];
    this.record = { version: DAMAGE_VERSION, ranges: merge(ranges), pending: [...this.pendingSet].sort((a, b) => a - b) };
    await writeFileDurable(this.file, JSON.stringify(this.record));
  }
}

function merge(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}
