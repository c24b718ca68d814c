// The hand-made Extent frame codec writes exactly protobufjs's bytes and reads every encoding of an
// Extent as protobufjs does; anything it does not know it leaves to protobufjs (null).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import t from 'tap';
import { decodeExtentFrame, encodeExtentFrame } from '../../../proto/extent-frame.js';
import { decodeMessage, encodeMessage, type ExtentMsg } from '../../../proto/messages.js';

const root = protobuf.loadSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'proto', 'tidemark.proto'));
const Frame = root.lookupType('tidemark.v1.Frame');
const Extent = root.lookupType('tidemark.v1.Extent');
const generic = (msg: object): Uint8Array => Frame.encode(Frame.fromObject(msg)).finish();
const genericDecode = (b: Uint8Array): unknown => {
  const obj = Frame.toObject(Frame.decode(b), { longs: Number, enums: String, defaults: true, oneofs: true }) as Record<string, unknown>;
  return { extent: obj.extent, body: obj.body };
};

const u32 = fc.oneof(fc.constantFrom(0, 1, 127, 128, 4096, 65536, 2 ** 31, 2 ** 32 - 1), fc.nat({ max: 2 ** 32 - 1 }));
const extent = fc.record({
  offset: fc.oneof(fc.constantFrom(0, 127, 128, 2 ** 32, 2 ** 40 - 4096, Number.MAX_SAFE_INTEGER), fc.nat({ max: Number.MAX_SAFE_INTEGER })),
  length: u32,
  crc32c: u32,
  compression: fc.constantFrom<ExtentMsg['compression']>('NONE', 'LZ4'),
  storedLength: u32,
});

t.test('encodes the bytes protobufjs writes', async (t) => {
  fc.assert(fc.property(extent, (e) => Buffer.from(encodeExtentFrame(e)!).equals(Buffer.from(generic({ extent: e })))), { numRuns: 2000 });
  t.pass('2000 random extents');
});

t.test('decodes what protobufjs writes, and as protobufjs reads it', async (t) => {
  fc.assert(fc.property(extent, (e) => {
    const b = generic({ extent: e });
    t.same(decodeExtentFrame(b), genericDecode(b));
    return true;
  }), { numRuns: 500 });
  // Fields in another order, defaults left out, a field repeated (the last wins): still read as protobufjs does.
  const inner = (fields: Array<[number, number]>): Uint8Array => {
    const w = protobuf.Writer.create();
    for (const [f, v] of fields) w.uint32(f << 3).uint64(v);
    const body = w.finish();
    return protobuf.Writer.create().uint32((6 << 3) | 2).bytes(body).finish();
  };
  for (const fields of [[], [[5, 9], [1, 4096]], [[3, 7], [3, 8]], [[4, 1], [2, 2 ** 32 + 5]]] as Array<Array<[number, number]>>) {
    const b = inner(fields);
    t.same(decodeExtentFrame(b), genericDecode(b), JSON.stringify(fields));
  }
});

t.test('leaves to protobufjs what it does not read the same way', async (t) => {
  t.equal(decodeExtentFrame(generic({ ack: { volumeId: 'v', durableSeq: 3 } })), null, 'another message');
  const withUnknown = protobuf.Writer.create().uint32((6 << 3) | 2).bytes(Extent.encode({ offset: 1 }).uint32((9 << 3) | 0).uint32(1).finish()).finish();
  t.equal(decodeExtentFrame(withUnknown), null, 'an unknown field');
  const badEnum = protobuf.Writer.create().uint32((6 << 3) | 2).bytes(protobuf.Writer.create().uint32(4 << 3).int32(7).finish()).finish();
  t.equal(decodeExtentFrame(badEnum), null, 'an unknown compression');
  const full = generic({ extent: { offset: 1, length: 2, crc32c: 3, compression: 'LZ4', storedLength: 4 } });
  for (let cut = 1; cut < full.length; cut++) t.equal(decodeExtentFrame(full.subarray(0, cut)), null, `cut at ${cut}`);
  t.equal(encodeExtentFrame({ offset: -1, length: 0, crc32c: 0, compression: 'NONE', storedLength: 0 }), null, 'a negative offset');
  t.equal(encodeExtentFrame({ offset: 0, length: 2 ** 32, crc32c: 0, compression: 'NONE', storedLength: 0 }), null, 'a length past u32');
  // Through the message layer, the fallback gives protobufjs's answer.
  t.same(decodeMessage(badEnum), { extent: { offset: 0, length: 0, crc32c: 0, compression: 7, storedLength: 0 }, body: 'extent' });
  t.same(decodeMessage(encodeMessage({ extent: { offset: 8192, length: 4096, crc32c: 5, compression: 'NONE', storedLength: 4096 } })), { extent: { offset: 8192, length: 4096, crc32c: 5, compression: 'NONE', storedLength: 4096 }, body: 'extent' });
});
