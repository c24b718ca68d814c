// Data-mode stream slicing (agent/trackers/data-stream.ts): request boundaries, aligned extents in order,
// partial blocks left for a re-read.
import t from 'tap';
import { boundary, toExtents } from '../../../agent/trackers/data-stream.js';
import { crc } from '../../../common/checksum.js';
import { DC_CRC, DC_DISCARD, DC_LAST, DC_MARK, DC_WRITE, type DataRecord } from '../../../native/datacap.js';

const rec = (seq: number, offset: number, length: number, flags: number, fill = seq): DataRecord => ({
  seq, offset, length, flags, epoch: 0, piece: 0, data: flags & DC_WRITE ? Buffer.alloc(length, fill) : null, crc: null,
});
/** A record as the reader thread queues it: with its data's crc. */
const withCrc = (r: DataRecord): DataRecord => ({ ...r, flags: r.flags | DC_CRC, crc: crc(r.data!) });

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

t.test('toExtents: the reader\'s crcs are used, joined across pieces, never read again from the bytes', async (t) => {
  // Completion 1: two pieces of one 8 KiB write; completion 2: one 4 KiB write; 3: a 4 KiB write whose
  // crc the reader did not give (computed here); 4: a piece ending mid-block (its whole part computed).
  const rs = [withCrc(rec(1, 0, 4096, DC_WRITE)), withCrc(rec(1, 4096, 4096, DC_WRITE | DC_LAST, 7)), withCrc(rec(2, 65536, 4096, DC_WRITE | DC_LAST)), rec(3, 131072, 4096, DC_WRITE | DC_LAST), withCrc(rec(4, 196608, 6144, DC_WRITE | DC_LAST))];
  const out = toExtents(rs, 4096);
  t.same(out.extents.map((e) => [e.offset, e.length]), [[0, 8192], [65536, 4096], [131072, 4096], [196608, 4096]]);
  for (const e of out.extents) t.equal(e.crc32c, crc(e.data), `extent at ${e.offset}: crc of its bytes`);
  // Proof it is the reader's value that is taken: a (deliberately) wrong one passes through unread.
  const forged = { ...withCrc(rec(5, 0, 4096, DC_WRITE | DC_LAST)), crc: 0x1234 };
  t.equal(toExtents([forged], 4096).extents[0]!.crc32c, 0x1234);
  const joined = toExtents([{ ...withCrc(rec(6, 0, 4096, DC_WRITE)), crc: 0x1234 }, withCrc(rec(6, 4096, 4096, DC_WRITE | DC_LAST))], 4096).extents[0]!;
  t.not(joined.crc32c, crc(joined.data), 'joined from the given crcs, not from the bytes');
});
