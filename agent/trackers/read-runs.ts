// Read runs of dirty blocks from a view quickly: neighbours closer than GAP are read in one request (the
// gap is read and dropped, which costs less than another round trip), and a few requests are in flight at
// once. Only the dirty blocks become extents.
import { crc } from '../../common/checksum.js';
import type { VolumeReader } from '../volume.js';
import type { DirtyExtent } from './tracker.js';

const GAP_BYTES = 64 * 1024;
const SPAN_BYTES = 1024 * 1024;
const IN_FLIGHT = 8;

/** `runs` are [first, end) block ranges in ascending order. */
export async function readRuns(view: VolumeReader, runs: Array<[number, number]>, blockSize: number): Promise<DirtyExtent[]> {
  // Group runs into spans.
  const spans: Array<{ first: number; end: number; runs: Array<[number, number]> }> = [];
  const gap = Math.max(1, Math.floor(GAP_BYTES / blockSize));
  const most = Math.max(1, Math.floor(SPAN_BYTES / blockSize));
  for (const r of runs) {
    const last = spans.at(-1);
    if (last && r[0] - last.end <= gap && r[1] - last.first <= most) {
      last.end = r[1];
      last.runs.push(r);
    } else {
      spans.push({ first: r[0], end: r[1], runs: [r] });
    }
  }
  const out: DirtyExtent[][] = new Array(spans.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < spans.length) {
      const i = next++;
      const s = spans[i]!;
      const data = await view.read(s.first * blockSize, (s.end - s.first) * blockSize);
      out[i] = s.runs.flatMap(([first, end]) => {
        const piece = data.subarray((first - s.first) * blockSize, Math.min((end - s.first) * blockSize, data.length));
        return piece.length === 0 ? [] : [{ offset: first * blockSize, length: piece.length, data: piece, crc32c: crc(piece) }];
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, spans.length) }, worker));
  return out.flat();
}
