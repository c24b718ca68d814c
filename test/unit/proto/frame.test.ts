// Framing: every message kind survives the wire, however the stream is split; damage is always caught.
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import { BufferPool, POOL_CAP, POOL_FROM } from '../../../common/buffer-pool.js';
import { FrameDecoder, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, PREFIX_BYTES, encodeFramePrefix, type Frame } from '../../../proto/frame.js';
import type { Message } from '../../../proto/messages.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

const BIG = 2 ** 52 + 3; // uint64 values beyond 32 bits must survive as exact JS numbers

const samples: Message[] = [
  { hello: { protocolVersion: 3, minProtocolVersion: 1, capabilities: ['lz4', 'cumulative-ack'], nodeName: 'agent-1', role: 'agent', software: 'tidemark/0.1.0' } },
  { welcome: { protocolVersion: 1, capabilities: ['lz4'], nodeName: 'ps-1' } },
  { openVolume: { volumeId: 'vol-1', sizeBytes: BIG, blockSize: 4096, replicationId: 'r-9f8e', generation: '0f'.repeat(16), parentGeneration: 'a1'.repeat(16), baseSeq: BIG, lastSeq: BIG + 2 } },
  { volumeState: { volumeId: 'vol-1', durableSeq: 2 ** 40 + 1 } },
  { diffBegin: { volumeId: 'vol-1', seq: BIG, startTimeMs: 1_700_000_000_123, endTimeMs: 1_700_000_000_456, consistency: 'APP', tags: ['snap', 'ü'], extentCount: 17, flags: 1 } },
  { extent: { offset: BIG, length: 65536, crc32c: 0xfedcba98, compression: 'LZ4', storedLength: 1234 } },
  { diffEnd: { volumeId: 'vol-1', seq: 99, extentCount: 17, extentDigest: 0xffffffff } },
  { ack: { volumeId: 'vol-1', durableSeq: BIG } },
  { resyncNeeded: { volumeId: 'vol-1', reason: 'agent state rolled back', regression: true, durableSeq: BIG } },
  { error: { code: 'TM_ERR_SEQUENCE_GAP', message: 'expected seq 5, got 7', volumeId: 'vol-1', seq: 7, retryable: true } },
];

const kindOf = (m: Message): string => Object.keys(m)[0]!;

function wire(m: Message, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeFramePrefix(m, payload), payload]);
}

/** A frame as the decoder should yield it, as plain objects (fast-check records have a null prototype). */
function expected(m: Message, payload: Buffer) {
  return { msg: structuredClone({ ...m, body: kindOf(m) }), payload: Buffer.from(payload) };
}
function actual(f: Frame) {
  return { msg: structuredClone(f.msg), payload: Buffer.from(f.payload) };
}

function pushAll(chunks: Buffer[]): Frame[] {
  const d = new FrameDecoder();
  return chunks.flatMap((c) => d.push(c));
}

t.test('every message kind round-trips with all fields equal', async (t) => {
  for (const m of samples) {
    const payload = Buffer.from(`payload of ${kindOf(m)}`);
    const frames = new FrameDecoder().push(wire(m, payload));
    t.equal(frames.length, 1, `${kindOf(m)}: one frame`);
    t.strictSame(actual(frames[0]!), expected(m, payload), `${kindOf(m)}: fields and payload equal`);
  }
});

t.test('zero and empty fields come back as their defaults', async (t) => {
  const m: Message = { diffBegin: { volumeId: '', seq: 0, startTimeMs: 0, endTimeMs: 0, consistency: 'FUZZY', tags: [], extentCount: 0, flags: 0 } };
  const [f] = new FrameDecoder().push(wire(m));
  t.strictSame(actual(f!), expected(m, Buffer.alloc(0)));
});

t.test('one byte at a time', async (t) => {
  const stream = Buffer.concat(samples.map((m, i) => wire(m, Buffer.alloc(i * 7, i))));
  const chunks = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
  t.strictSame(pushAll(chunks).map(actual), samples.map((m, i) => expected(m, Buffer.alloc(i * 7, i))));
});

const messageArb: fc.Arbitrary<Message> = fc.oneof(
  fc.constantFrom(...samples),
  fc.record({ offset: fc.maxSafeNat(), length: fc.nat({ max: 0xffffffff }), crc32c: fc.nat({ max: 0xffffffff }), compression: fc.constantFrom('NONE' as const, 'LZ4' as const), storedLength: fc.nat({ max: 0xffffffff }) }).map((extent) => ({ extent })),
  fc.record({ volumeId: fc.string(), durableSeq: fc.maxSafeNat() }).map((ack) => ({ ack })),
  fc.record({ code: fc.string(), message: fc.string({ unit: 'grapheme' }), volumeId: fc.string(), seq: fc.maxSafeNat(), retryable: fc.boolean() }).map((error) => ({ error })),
);
const framesArb = fc.array(fc.tuple(messageArb, fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a))), { minLength: 1, maxLength: 8 });

/** Split `buf` at the given cut points (taken modulo its length). */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, buf.length]) {
    out.push(buf.subarray(prev, c)); // empty chunks included: pushing nothing must be harmless
    prev = c;
  }
  return out;
}

t.test('property: frames re-split at random boundaries decode to the same frames in order', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(framesArb, fc.array(fc.nat(), { maxLength: 40 }), fc.boolean(), (frames, cuts, bytewise) => {
    const stream = Buffer.concat(frames.map(([m, p]) => wire(m, p)));
    const chunks = bytewise ? split(stream, Array.from({ length: stream.length }, (_, i) => i)) : split(stream, cuts);
    assert.deepEqual(pushAll(chunks).map(actual), frames.map(([m, p]) => expected(m, p)));
  }), { numRuns: 100 }));
});

const DAMAGE = ['TM_ERR_FRAME_CHECKSUM', 'TM_ERR_FRAME_TOO_LARGE', 'TM_ERR_PROTOCOL'];

t.test('property: a flipped bit anywhere is caught and never yields a changed frame', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(framesArb, fc.nat(), fc.array(fc.nat(), { maxLength: 20 }), (frames, bit, cuts) => {
    const stream = Buffer.concat(frames.map(([m, p]) => wire(m, p)));
    const at = bit % (stream.length * 8);
    stream[at >> 3]! ^= 1 << (at & 7);
    const want = frames.map(([m, p]) => expected(m, p));
    const d = new FrameDecoder();
    const got: Frame[] = [];
    let code = 'no throw';
    try {
      for (const c of split(stream, cuts)) got.push(...d.push(c));
    } catch (e) {
      code = e instanceof TidemarkError ? e.code : `not a TidemarkError: ${String(e)}`;
    }
    assert.ok(DAMAGE.includes(code), `bit ${at}: ${code}`);
    assert.deepEqual(got.map(actual), want.slice(0, got.length), 'frames yielded before the error are the originals');
  }), { numRuns: 200 }));
});

function prefix(headerLen: number, payloadLen: number): Buffer {
  const p = Buffer.alloc(PREFIX_BYTES);
  p.writeUInt32LE(headerLen, 0);
  p.writeUInt32LE(payloadLen, 4);
  p.writeUInt32LE(crc(p.subarray(0, 8)), 8);
  return p;
}

t.test('oversized frames are refused from the prefix alone', async (t) => {
  t.throws(() => new FrameDecoder().push(prefix(10, MAX_PAYLOAD_BYTES + 1)), { code: 'TM_ERR_FRAME_TOO_LARGE' }, 'payload above MAX_PAYLOAD_BYTES');
  t.throws(() => new FrameDecoder().push(prefix(MAX_HEADER_BYTES + 1, 0)), { code: 'TM_ERR_FRAME_TOO_LARGE' }, 'header above MAX_HEADER_BYTES');
  const d = new FrameDecoder();
  const p = prefix(10, 0xffffffff);
  t.strictSame(d.push(p.subarray(0, 15)), [], 'nothing to say before the prefix is whole');
  t.throws(() => d.push(p.subarray(15)), { code: 'TM_ERR_FRAME_TOO_LARGE' }, 'thrown as soon as the last prefix byte arrives');
  t.throws(() => encodeFramePrefix(samples[5]!, Buffer.alloc(MAX_PAYLOAD_BYTES + 1)), { code: 'TM_ERR_FRAME_TOO_LARGE' }, 'encoder refuses too');
});

t.test('a payload of exactly MAX_PAYLOAD_BYTES is accepted', async (t) => {
  const payload = Buffer.alloc(MAX_PAYLOAD_BYTES, 0x5a);
  const [f] = new FrameDecoder().push(wire(samples[5]!, payload));
  t.ok(f !== undefined && f.payload.equals(payload));
});

t.test('a checksummed body that is not a Frame is TM_ERR_PROTOCOL', async (t) => {
  const junk = Buffer.from([0xff, 0xff, 0xff, 0xff]);
  const p = prefix(junk.length, 0);
  p.writeUInt32LE(crc(junk), 12);
  t.throws(() => new FrameDecoder().push(Buffer.concat([p, junk])), { code: 'TM_ERR_PROTOCOL' });
});

t.test('the decoder reports each payload\'s crc; a prefix built from a known payload crc is the same bytes', async (t) => {
  const payload = Buffer.from('extent bytes '.repeat(300));
  const m: Message = { extent: { offset: 4096, length: payload.length, crc32c: crc(payload), compression: 'NONE', storedLength: payload.length } };
  const given = encodeFramePrefix(m, payload, crc(payload));
  t.ok(given.equals(encodeFramePrefix(m, payload)), 'same prefix as computed from the bytes');
  const [f] = new FrameDecoder().push(Buffer.concat([given, payload]));
  t.equal(f!.payloadCrc, crc(payload));
  t.equal(new FrameDecoder().push(Buffer.concat([encodeFramePrefix({ ack: { volumeId: 'v', durableSeq: 1 } }), Buffer.alloc(0)]))[0]!.payloadCrc, 0, 'no payload: crc 0');
  const lying = encodeFramePrefix(m, payload, (crc(payload) ^ 1) >>> 0);
  t.throws(() => new FrameDecoder().push(Buffer.concat([lying, payload])), { code: 'TM_ERR_FRAME_CHECKSUM' }, 'a payload crc that is not the bytes\' fails the frame check');
});

/** 16 KiB pieces, as a TLS socket hands them over. */
const tlsChunks = (b: Buffer): Buffer[] => Array.from({ length: Math.ceil(b.length / 16384) }, (_, i) => b.subarray(i * 16384, (i + 1) * 16384));
const bigExtent = (fill: number, n = 1 << 20): [Message, Buffer] => {
  const payload = Buffer.alloc(n, fill);
  for (let i = 0; i < n; i += 4093) payload[i] = (i * 31) & 0xff;
  return [{ extent: { offset: 0, length: n, crc32c: crc(payload), compression: 'NONE', storedLength: n } }, payload];
};

t.test('large bodies assembled across chunks: equal, crc right, pooled only within the pool\'s bounds', async (t) => {
  const frames: [Message, Buffer][] = [bigExtent(1), [samples[7]!, Buffer.alloc(0)], bigExtent(2, POOL_FROM), bigExtent(3, POOL_FROM - 17), bigExtent(4, POOL_CAP + 1)];
  const stream = Buffer.concat(frames.map(([m, p]) => wire(m, p)));
  for (const [chunks, pooled] of [
    [tlsChunks(stream), [true, false, true, false, false]],
    // a body lying whole in one chunk is a view of it, never pooled
    [split(stream, [5, 16, 17, 1 << 19, (1 << 20) + 3, 3 << 20]), [true, false, false, false, false]],
  ] as const) {
    const got = pushAll([...chunks]);
    t.strictSame(got.map(actual), frames.map(([m, p]) => expected(m, p)));
    t.same(got.map((f) => f.payloadCrc), frames.map(([, p]) => crc(p)), 'each payload crc, folded piece by piece');
    t.same(got.map((f) => f.release !== undefined), pooled, 'pooled: 32 KiB up to the cap, never smaller or larger');
  }
});

t.test('a released body is reused; one never released is never written again', async (t) => {
  const d = new FrameDecoder(new BufferPool());
  const [m1, p1] = bigExtent(1);
  const [m2, p2] = bigExtent(2);
  const [m3, p3] = bigExtent(3);
  const [kept] = tlsChunks(wire(m1, p1)).flatMap((c) => d.push(c));
  const [released] = tlsChunks(wire(m2, p2)).flatMap((c) => d.push(c));
  released!.release!();
  released!.release!(); // twice is harmless: the buffer is pooled once
  const [next] = tlsChunks(wire(m3, p3)).flatMap((c) => d.push(c));
  const [after] = tlsChunks(wire(m1, p1)).flatMap((c) => d.push(c));
  t.equal(next!.payload.buffer, released!.payload.buffer, 'the released buffer carries the next large body');
  t.not(after!.payload.buffer, next!.payload.buffer, 'released once, handed out once');
  t.ok(kept!.payload.equals(p1), 'the body never released still holds its own bytes');
  t.ok(next!.payload.equals(p3) && after!.payload.equals(p1));
});

t.test('a pooled body kept by its consumer pins its own size rounded up, not the pool\'s cap', async (t) => {
  const d = new FrameDecoder(new BufferPool());
  const [m, p] = bigExtent(5, 600 * 1024); // a compressed 1 MiB extent, stored as is
  const [kept] = tlsChunks(wire(m, p)).flatMap((c) => d.push(c));
  t.ok(kept!.release !== undefined, 'pooled');
  t.ok(kept!.payload.equals(p));
  t.equal(kept!.payload.buffer.byteLength, 640 * 1024, 'its body rounded up to 64 KiB');
});

t.test('released bodies serve the next body of their size class, or up to a quarter smaller', async (t) => {
  const d = new FrameDecoder(new BufferPool());
  const one = (fill: number, n: number): Frame => tlsChunks(wire(...bigExtent(fill, n))).flatMap((c) => d.push(c))[0]!;
  const small = one(1, 600 * 1024);
  const large = one(2, 1 << 20);
  small.release!();
  large.release!();
  // A body a few bytes longer than the last 1 MiB one (a longer header) still fits its buffer.
  const [m0, p] = bigExtent(3);
  const m: Message = { extent: { ...(m0 as Extract<Message, { extent: unknown }>).extent, offset: 2 ** 40 } };
  t.ok(wire(m, p).length > wire(m0, p).length, 'the next header is longer');
  const [f] = tlsChunks(wire(m, p)).flatMap((c) => d.push(c));
  t.equal(f!.payload.buffer, large.payload.buffer, 'the large buffer, as the small one cannot hold it');
  t.ok(f!.payload.equals(p));
  const loose = one(4, 400 * 1024);
  t.not(loose.payload.buffer, small.payload.buffer, 'not the 640 KiB buffer for a 400 KiB body, which may be kept: a new one');
  t.equal(loose.payload.buffer.byteLength, 448 * 1024);
  const g = one(5, 590 * 1024);
  t.equal(g.payload.buffer, small.payload.buffer, 'the small buffer for a body it fits closely');
  t.ok(g.payload.equals(bigExtent(5, 590 * 1024)[1]));
  const h = one(6, 900 * 1024);
  t.not(h.payload.buffer, large.payload.buffer, 'nothing left in the pool: a new buffer');
  t.ok(f!.payload.equals(p) && loose.payload.equals(bigExtent(4, 400 * 1024)[1]), 'the bodies handed out still hold their own bytes');
});

t.test('property: a flipped bit in a large body split anywhere is caught', async (t) => {
  const [m, p] = bigExtent(9, POOL_FROM + 1000);
  const clean = wire(m, p);
  t.doesNotThrow(() => fc.assert(fc.property(fc.nat(), fc.array(fc.nat(), { maxLength: 12 }), (bit, cuts) => {
    const stream = Buffer.from(clean);
    const at = bit % (stream.length * 8);
    stream[at >> 3]! ^= 1 << (at & 7);
    const d = new FrameDecoder();
    let code = 'no throw';
    try {
      for (const c of split(stream, cuts)) d.push(c);
    } catch (e) {
      code = e instanceof TidemarkError ? e.code : String(e);
    }
    assert.ok(DAMAGE.includes(code), `bit ${at}: ${code}`);
  }), { numRuns: 60 }));
});

t.test('a frame with an empty body at the very end of a chunk is yielded at once', async (t) => {
  const empty = Buffer.alloc(PREFIX_BYTES);
  empty.writeUInt32LE(crc(empty.subarray(0, 8)), 8);
  t.throws(() => new FrameDecoder().push(empty), { code: 'TM_ERR_PROTOCOL' }, 'decoded (and refused as no message) without waiting for more bytes');
});
