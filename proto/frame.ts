// Frame layout (docs/PROTOCOL.md):
//   0  u32 LE  header length H (encoded protobuf Frame)
//   4  u32 LE  payload length P (bulk data beside the header)
//   8  u32 LE  crc32c of bytes 0..8 (so a corrupt length is caught before we wait for it)
//  12  u32 LE  crc32c of header bytes then payload bytes
//  16  H bytes header, then P bytes payload
import { crc } from '../common/checksum.js';
import { extentPool, type BufferPool } from '../common/buffer-pool.js';
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
  /**
   * Present when the body sits in a pooled buffer (FrameDecoder): called once nothing refers to the
   * payload any more (the process server: compressed into other bytes; the master target: applied and
   * committed), so the buffer is reused. A payload whose end is not known is simply never released.
   */
  release?: () => void;
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
 * Incremental decoder: push socket chunks, take whole verified frames. A body that lies whole inside one
 * chunk is a view of it (no copy); else its bytes are copied once, chunk by chunk as they arrive, into a
 * buffer of the body's length, and the crc is computed over each piece right after it was copied (still
 * in cache), not over the whole body again once it is complete.
 */
export class FrameDecoder {
  private readonly prefix = Buffer.allocUnsafe(PREFIX_BYTES);
  private prefixHave = 0;
  private need: { header: number; payload: number; bodyCrc: number } | null = null;
  /** The body being assembled: its buffer, bytes in it so far, and the crcs of what it holds so far. */
  private body: Buffer | null = null;
  private have = 0;
  private headerCrc = 0;
  private payloadCrc = 0;
  private pooled = false;

  /**
   * `pool`: where bodies assembled from several chunks get their buffers (extent-sized ones; see
   * common/buffer-pool.ts), given back by Frame.release() once nothing refers to the payload.
   */
  constructor(private readonly pool: BufferPool = extentPool) {}

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let at = 0;
    for (;;) {
      if (this.need === null) {
        if (at === chunk.length) break;
        // The prefix: usually whole in the chunk; else gathered across chunks.
        const n = Math.min(PREFIX_BYTES - this.prefixHave, chunk.length - at);
        chunk.copy(this.prefix, this.prefixHave, at, at + n);
        this.prefixHave += n;
        at += n;
        if (this.prefixHave < PREFIX_BYTES) break;
        this.prefixHave = 0;
        this.need = this.readPrefix();
      }
      const { header, payload } = this.need;
      const len = header + payload;
      if (this.body === null && chunk.length - at >= len) {
        // Whole in this chunk: views, no copy (one each for header and payload, used for crc and decode).
        const h = chunk.subarray(at, at + header);
        const p = chunk.subarray(at + header, at + len);
        at += len;
        frames.push(this.finish(h, p, crc(h), crc(p), null));
        continue;
      }
      if (at === chunk.length) break;
      if (this.body === null) this.startBody(len);
      const n = Math.min(len - this.have, chunk.length - at);
      const body = this.body!;
      chunk.copy(body, this.have, at, at + n);
      this.absorb(this.have, this.have + n, header);
      this.have += n;
      at += n;
      if (this.have < len) break;
      const pooled = this.pooled;
      this.body = null;
      frames.push(this.finish(body.subarray(0, header), body.subarray(header), this.headerCrc, this.payloadCrc, pooled ? body : null));
    }
    return frames;
  }

  private readPrefix(): { header: number; payload: number; bodyCrc: number } {
    const p = this.prefix;
    const header = p.readUInt32LE(0);
    const payload = p.readUInt32LE(4);
    if (crc(p.subarray(0, 8)) !== p.readUInt32LE(8)) throw tmError('TM_ERR_FRAME_CHECKSUM', 'frame prefix checksum mismatch');
    if (header > MAX_HEADER_BYTES || payload > MAX_PAYLOAD_BYTES) {
      throw tmError('TM_ERR_FRAME_TOO_LARGE', `frame declares header ${header} and payload ${payload} bytes`);
    }
    return { header, payload, bodyCrc: p.readUInt32LE(12) };
  }

  private startBody(len: number): void {
    this.pooled = this.pool.pools(len);
    this.body = this.pool.take(len);
    this.have = 0;
    this.headerCrc = 0;
    this.payloadCrc = 0;
  }

  /** Fold body bytes [from, to), just copied, into the header's and the payload's crcs. */
  private absorb(from: number, to: number, header: number): void {
    const body = this.body!;
    if (from < header) this.headerCrc = crc(body.subarray(from, Math.min(to, header)), this.headerCrc);
    if (to > header) this.payloadCrc = crc(body.subarray(Math.max(from, header), to), this.payloadCrc);
  }

  private finish(headerBytes: Buffer, payloadBytes: Buffer, headerCrc: number, payloadCrc: number, pooled: Buffer | null): Frame {
    const { payload, bodyCrc } = this.need!;
    this.need = null;
    if (crc32cCombine(headerCrc, payloadCrc, payload) !== bodyCrc) throw tmError('TM_ERR_FRAME_CHECKSUM', 'frame body checksum mismatch');
    let msg;
    try {
      msg = decodeMessage(headerBytes);
    } catch (e) {
      throw tmError('TM_ERR_PROTOCOL', `undecodable frame header: ${(e as Error).message}`);
    }
    const frame: Frame = { msg, payload: payloadBytes, payloadCrc };
    if (pooled) {
      let released = false;
      frame.release = () => {
        if (released) return;
        released = true;
        this.pool.give(pooled);
      };
    }
    return frame;
  }
}
