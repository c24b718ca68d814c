// Frame layout (docs/PROTOCOL.md):
//   0  u32 LE  header length H (encoded protobuf Frame)
//   4  u32 LE  payload length P (bulk data beside the header)
//   8  u32 LE  crc32c of bytes 0..8 (so a corrupt length is caught before we wait for it)
//  12  u32 LE  crc32c of header bytes then payload bytes
//  16  H bytes header, then P bytes payload
import { crc } from '../common/checksum.js';
import { crc32cCombine } from '../common/crc-combine.js';
import { tmError } from '../common/errors.js';
import { decodeMessage, encodeMessage, type Message, type MessageKind } from './messages.js';

export const PREFIX_BYTES = 16;
export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

export interface Frame {
  msg: Message & { body: MessageKind };
  payload: Buffer;
  /** crc32c of the payload, computed here once as part of the frame's verified body crc. */
  payloadCrc: number;
}

/**
 * The bytes to put on the wire before the payload (the payload itself is written as is). `payloadCrc`:
 * the payload's crc32c when the caller already has it (an extent's), so the payload is not read again;
 * the body crc is then derived by crc32c combination, the same value a reader computes from the bytes.
 */
export function encodeFramePrefix(msg: Message, payload?: Uint8Array, payloadCrc?: number): Buffer {
  const header = encodeMessage(msg);
  const plen = payload?.length ?? 0;
  if (plen > MAX_PAYLOAD_BYTES) throw tmError('TM_ERR_FRAME_TOO_LARGE', `payload of ${plen} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  const out = Buffer.allocUnsafe(PREFIX_BYTES + header.length);
  out.writeUInt32LE(header.length, 0);
  out.writeUInt32LE(plen, 4);
  out.writeUInt32LE(crc(out.subarray(0, 8)), 8);
  out.set(header, PREFIX_BYTES);
  let body = crc(header);
  if (payload && plen > 0) body = payloadCrc === undefined ? crc(payload, body) : crc32cCombine(body, payloadCrc, plen);
  out.writeUInt32LE(body, 12);
  return out;
}

/**
 * Incremental decoder: push socket chunks, take whole verified frames. Chunks are kept as a list and
 * joined once per frame, so a frame costs one copy however the stream was split.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need: { header: number; payload: number; bodyCrc: number } | null = null;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.need === null) {
        if (this.buffered < PREFIX_BYTES) break;
        const prefix = this.take(PREFIX_BYTES);
        const header = prefix.readUInt32LE(0);
        const payload = prefix.readUInt32LE(4);
        if (crc(prefix.subarray(0, 8)) !== prefix.readUInt32LE(8)) {
          throw tmError('TM_ERR_FRAME_CHECKSUM', 'frame prefix checksum mismatch');
        }
        if (header > MAX_HEADER_BYTES || payload > MAX_PAYLOAD_BYTES) {
          throw tmError('TM_ERR_FRAME_TOO_LARGE', `frame declares header ${header} and payload ${payload} bytes`);
        }
        this.need = { header, payload, bodyCrc: prefix.readUInt32LE(12) };
      }
      const { header, payload, bodyCrc } = this.need;
      if (this.buffered < header + payload) break;
      const body = this.take(header + payload);
      this.need = null;
      // One pass over the bytes: the header's crc and the payload's, combined into the body's.
      const payloadCrc = crc(body.subarray(header));
      if (crc32cCombine(crc(body.subarray(0, header)), payloadCrc, payload) !== bodyCrc) throw tmError('TM_ERR_FRAME_CHECKSUM', 'frame body checksum mismatch');
      let msg;
      try {
        msg = decodeMessage(body.subarray(0, header));
      } catch (e) {
        throw tmError('TM_ERR_PROTOCOL', `undecodable frame header: ${(e as Error).message}`);
      }
      frames.push({ msg, payload: body.subarray(header), payloadCrc });
    }
    return frames;
  }

  private take(n: number): Buffer {
    const whole = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const out = whole.subarray(0, n);
    const rest = whole.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}
