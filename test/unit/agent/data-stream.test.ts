// Data-mode stream slicing (agent/trackers/data-stream.ts): request boundaries, aligned extents in order,
// partial blocks left for a re-read.
import t from 'tap';
import { boundary, toExtents } from '../../../agent/trackers/data-stream.js';
import { DC_DISCARD, DC_LAST, DC_MARK, DC_WRITE, type DataRecord } from '../../../native/datacap.js';

const rec = (seq: number, offset: number, length: number, flags: number, fill = seq): DataRecord => ({
  seq, offset, length, flags, epoch: 0, piece: 0, data: flags & DC_WRITE ? Buffer.alloc(length, fill) : null,
});

t.test('boundary: the longest prefix of whole completions', async (t) => {
  // Completions 1 and 2 interleave (two CPUs); 3 is still open at the end.
  const rs = [rec(1, 0, 4096, DC_WRITE), rec(2, 8192, 4096, DC_WRITE), rec(1, 4096, 4096, DC_WRITE | DC_LAST), rec(2, 12288, 4096, DC_WRITE | DC_LAST), rec(3, 0, 4096, DC_WRITE)];
  t.same(boundary(rs, false), { take: 4, atBoundary: true });
  t.same(boundary(rs.slice(0, 1), false), { take: 0, atBoundary: true }, 'nothing whole yet');
  t.same(boundary(rs.slice(0, 1), true), { take: 1, atBoundary: false }, 'forced: all of it, not a boundary');
  t.same(boundary([rec(9, 0, 0, DC_MARK | DC_LAST)], false), { take: 1, atBoundary: true }, 'a marker is whole');
});

t.test('toExtents: pieces of one completion joined, order kept, discards as zeroes', async (t) => {
  const rs = [rec(1, 0, 4096, DC_WRITE, 1), rec(1, 4096, 4096, DC_WRITE | DC_LAST, 1), rec(2, 0, 4096, DC_WRITE | DC_LAST, 2), rec(3, 8192, 8192, DC_DISCARD | DC_LAST)];
  const s = toExtents(rs, 4096);
  t.same(s.extents.map((e) => [e.offset, e.length, e.data[0]]), [[0, 8192, 1], [0, 4096, 2], [8192, 8192, 0]], 'the later write to block 0 comes after the earlier one');
  t.same(s.partial, []);
  t.equal(s.bytes, 8192 + 4096 + 8192);
});

t.test('toExtents: writes of part of a block leave those blocks for a re-read', async (t) => {
  const s = toExtents([rec(1, 512, 8192, DC_WRITE | DC_LAST), rec(2, 100, 10, DC_WRITE | DC_LAST)], 4096);
  t.same(s.extents.map((e) => [e.offset, e.length]), [[4096, 4096]], 'only the whole block in between');
  t.same(s.partial, [[0, 1], [2, 3], [0, 1]]);
});
