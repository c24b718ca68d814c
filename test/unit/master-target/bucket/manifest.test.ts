// The bucket manifest's codec and the plan that says which objects rebuild a point.
import fc from 'fast-check';
import t from 'tap';
import { bucketPoints, decodeManifest, emptyManifest, encodeManifest, planFor, type Manifest } from '../../../../master-target/bucket/manifest.js';

const pt = (seq: number) => ({ seq, atMs: 1000 * seq, consistency: 'CRASH' as const, tags: [], appliedAt: 1000 * seq });
const seg = (from: number, to: number) => ({ key: `v/segments/${from}-${to}`, fromSeq: from, toSeq: to, bytes: 1, crc32c: 0, base: pt(from - 1), tip: pt(to), uploadedAt: 0 });
const img = (id: number, seq: number, needsSeq: number, parentId: number | null) => ({ key: `v/images/${id}`, id, kind: parentId === null ? 'full' as const : 'incremental' as const, seq, needsSeq, parentId, bytes: 1, dataBytes: 1, chunks: 0, indexOffset: 0, indexCrc32c: 0, uploadedAt: 0 });

function sample(): Manifest {
  const m = emptyManifest('v', 1 << 20, 4096);
  for (let s = 3; s <= 12; s++) m.segments.push(seg(s, s));
  m.images.push(img(1, 6, 7, null), img(2, 10, 12, 1));
  return m;
}

t.test('round trip; damage and newer versions are refused with their codes', async (t) => {
  const m = sample();
  t.same(decodeManifest(encodeManifest(m), 'k'), m);
  fc.assert(fc.property(fc.integer({ min: 0, max: encodeManifest(m).length - 1 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
    const b = encodeManifest(m);
    b[at]! ^= x;
    try {
      decodeManifest(b, 'k');
      return false;
    } catch (e) {
      return ['TM_ERR_BUCKET_CORRUPT', 'TM_ERR_BUCKET_VERSION'].includes((e as { code: string }).code);
    }
  }));
  const newer = encodeManifest(m);
  newer.writeUInt16LE(3, 4);
  t.throws(() => decodeManifest(newer, 'k'), { code: 'TM_ERR_BUCKET_VERSION' });
});

t.test('a point is listed only when an image at or after it and unbroken segments back to it exist', async (t) => {
  const m = sample();
  // Points 2..10: images reach back through segments; 11 and 12 are newer than the newest image.
  t.same(bucketPoints(m).map((p) => p.seq), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const p5 = planFor(m, pt(5))!;
  t.same(p5.images.map((i) => i.id), [1], 'the nearest image (full #1 at 6) is used');
  t.same(p5.segments.map((s) => s.fromSeq), [6, 7], 'with the segments through its needsSeq');
  const p8 = planFor(m, pt(8))!;
  t.same(p8.images.map((i) => i.id), [1, 2], 'an incremental image brings its base');
  // A torn or missing segment breaks the points that need it, never lists them.
  m.segments = m.segments.filter((s) => s.fromSeq !== 9);
  t.same(bucketPoints(m).map((p) => p.seq), [2, 3, 4, 5, 6, 9, 10], 'a gap hides the points (7, 8) only it could reach');
});
