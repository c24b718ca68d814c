// Data-mode stream slicing (agent/trackers/data-stream.ts): request boundaries, aligned extents in order,
// partial blocks left for a re-read.
import t from 'tap';
import { boundary, joined, toExtents } from '../../../agent/trackers/data-stream.js';
import { crc } from '../../../common/checksum.js';
import { DC_CRC, DC_DISCARD, DC_HDR, DC_LAST, DC_MARK, DC_WRITE, parseRecords, type DataRecord } from '../../../native/datacap.js';

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

/** A buffer in take()'s layout (native/src/datacap.c dc_take): count, headers, then the data in order. */
function takeBuffer(rs: Array<{ seq: number; offset: number; flags: number; data?: Buffer; length?: number }>): Buffer {
  const heads = rs.map((r) => {
    const h = Buffer.alloc(DC_HDR);
    h.writeBigUInt64LE(BigInt(r.seq), 0);
    h.writeBigUInt64LE(BigInt(r.offset), 8);
    h.writeUInt32LE(r.data?.length ?? r.length ?? 0, 16);
    h.writeUInt16LE(r.flags, 20);
    return h;
  });
  const count = Buffer.alloc(8);
  count.writeUInt32LE(rs.length, 0);
  return Buffer.concat([count, ...heads, ...rs.flatMap((r) => (r.data ? [r.data] : []))]);
}

t.test('parseRecords: headers first, data after; a request\'s pieces join by a view, not a copy', async (t) => {
  const a = Buffer.alloc(4096, 1);
  const b = Buffer.alloc(4096, 2);
  const c = Buffer.alloc(4096, 3);
  const buf = takeBuffer([
    { seq: 1, offset: 0, flags: DC_WRITE, data: a },
    { seq: 1, offset: 4096, flags: DC_WRITE | DC_LAST, data: b },
    { seq: 2, offset: 65536, flags: DC_DISCARD | DC_LAST, length: 8192 },
    { seq: 3, offset: 8192, flags: DC_WRITE | DC_LAST, data: c },
  ]);
  const rs = parseRecords(buf);
  t.same(rs.map((r) => [r.seq, r.offset, r.length, r.data?.[0] ?? null]), [[1, 0, 4096, 1], [1, 4096, 4096, 2], [2, 65536, 8192, null], [3, 8192, 4096, 3]]);
  const out = toExtents(rs, 4096);
  t.same(out.extents.map((e) => [e.offset, e.length]), [[0, 8192], [65536, 8192], [8192, 4096]]);
  const first = out.extents[0]!.data;
  t.equal(first.buffer, buf.buffer, 'the 8 KiB extent is a view of the take buffer');
  t.same(first, Buffer.concat([a, b]));
  // Pieces from two takes (a request cut by the take bound) are copied together, bytes the same.
  const split = [...parseRecords(takeBuffer([{ seq: 4, offset: 0, flags: DC_WRITE, data: a }])), ...parseRecords(takeBuffer([{ seq: 4, offset: 4096, flags: DC_WRITE | DC_LAST, data: b }]))];
  t.same(joined(split.map((r) => r.data!)), Buffer.concat([a, b]));
});

t.test('parseRecords refuses a take buffer whose count and lengths disagree', async (t) => {
  const good = takeBuffer([{ seq: 1, offset: 0, flags: DC_WRITE | DC_LAST, data: Buffer.alloc(4096, 1) }]);
  t.throws(() => parseRecords(good.subarray(0, good.length - 1)), { code: 'TM_ERR_NATIVE' }, 'data cut short');
  t.throws(() => parseRecords(Buffer.concat([good, Buffer.alloc(1)])), { code: 'TM_ERR_NATIVE' }, 'bytes past the records');
  const lying = Buffer.from(good);
  lying.writeUInt32LE(1000, 0);
  t.throws(() => parseRecords(lying), { code: 'TM_ERR_NATIVE' }, 'more headers declared than the buffer holds');
  t.same(parseRecords(Buffer.alloc(0)), [], 'an empty take: no records');
});
