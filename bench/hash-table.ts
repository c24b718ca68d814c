// `npm run bench -- hash-table`: what saving a per-block hash table costs per differential, by volume size
// and by the shape of the differential. Version 3 rewrites the changed pages in place; the same-run
// reference is the whole-file durable rewrite versions 1 and 2 did (tmp, fsync, rename, fsync dir) of the
// same table, and the floor is one 4 KiB write + fdatasync in the same directory.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileDurable } from '../common/durable.js';
import { HashTableFile, PAGE } from '../common/hash-table.js';
import { GiB, MiB, WORK_DIR, type BenchResult, type Benchmark, type Figure, type Ratio } from './harness.js';

const BS = 4096;
const SAVES = 25;

interface Shape {
  name: string;
  /** Blocks the differential changes, given the table's length and the save's index. */
  blocks(count: number, i: number): number[];
}

const SHAPES: Shape[] = [
  { name: '64 scattered blocks', blocks: (count, i) => Array.from({ length: 64 }, (_, k) => ((i * 64 + k) * 2654435761) % count) },
  { name: '64 MiB window', blocks: (count, i) => Array.from({ length: (64 * MiB) / BS }, (_, k) => ((i * 64 * MiB) / BS + k) % count) },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export const hashTable: Benchmark = {
  description: 'hash-table save per differential: in-place pages (v3) vs whole-file rewrite (v2), 1 and 4 GiB volumes',
  async run(): Promise<BenchResult> {
    const dir = path.join(WORK_DIR, 'hash-table');
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true });
    const figures: Figure[] = [];
    const ratios: Ratio[] = [];
    const table: string[][] = [['volume', 'differential', 'paged save ms (p50)', 'whole rewrite ms (p50)', 'paged / whole', 'bytes written paged', 'bytes written whole']];

    // The floor: one page written and made durable.
    const floorFile = path.join(dir, 'floor.bin');
    const fh = await fsp.open(floorFile, 'w');
    const page = Buffer.alloc(PAGE, 1);
    const floor: number[] = [];
    for (let i = 0; i < SAVES; i++) floor.push(await timeMs(async () => (await fh.write(page, 0, PAGE, 0), await fh.datasync())));
    await fh.close();
    figures.push({ name: 'one 4 KiB pwrite + fdatasync p50', value: median(floor), unit: 'ms' });

    for (const size of [1 * GiB, 4 * GiB]) {
      const count = size / BS;
      for (const shape of SHAPES) {
        const file = new HashTableFile(path.join(dir, `t-${size}.bin`), BS, size);
        const hashes = new BigUint64Array(count).fill(1n);
        await file.save(hashes, 0);
        const paged: number[] = [];
        const whole: number[] = [];
        let pagedBytes = 0;
        for (let i = 0; i < SAVES; i++) {
          const blocks = shape.blocks(count, i);
          for (const b of blocks) {
            hashes[b] = BigInt(i * 7 + b + 2);
            file.changed(b);
          }
          pagedBytes = file.pendingPages * PAGE + PAGE;
          paged.push(await timeMs(() => file.save(hashes, i + 1)));
          // The reference: the same table written whole and durably, as versions 1 and 2 did.
          const body = Buffer.from(hashes.buffer);
          whole.push(await timeMs(() => writeFileDurable(path.join(dir, `whole-${size}.bin`), Buffer.concat([Buffer.alloc(40), body]))));
        }
        const label = `${size / GiB} GiB`;
        const p = median(paged);
        const w = median(whole);
        figures.push({ name: `${label}, ${shape.name}: paged save p50`, value: p, unit: 'ms' }, { name: `${label}, ${shape.name}: whole rewrite p50`, value: w, unit: 'ms' }, { name: `${label}, ${shape.name}: bytes written per paged save`, value: pagedBytes, unit: 'bytes' });
        ratios.push({ name: `paged / whole, ${label}, ${shape.name}`, numerator: `${label}, ${shape.name}: paged save p50`, denominator: `${label}, ${shape.name}: whole rewrite p50`, value: p / w });
        table.push([label, shape.name, p.toFixed(2), w.toFixed(2), (p / w).toFixed(3), String(pagedBytes), String(count * 8 + 40)]);
      }
    }
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') await fsp.rm(dir, { recursive: true, force: true });
    return {
      params: { blockSize: BS, savesPerCase: SAVES, dir },
      figures,
      references: [
        { name: 'whole-file durable rewrite (format versions 1 and 2)', description: 'tmp file, write, fsync, rename, fsync dir: what each save cost before version 3', figures: figures.filter((f) => f.name.includes('whole rewrite')) },
        { name: 'one page made durable', description: 'a 4 KiB pwrite and fdatasync in the same directory: the least a durable save can cost', figures: figures.filter((f) => f.name.startsWith('one 4 KiB')) },
      ],
      quoted: [],
      ratios,
      table,
      notes: [`floor: one 4 KiB pwrite + fdatasync p50 ${median(floor).toFixed(2)} ms`],
    };
  },
};
