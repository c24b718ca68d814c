// What the writer puts in each 4 KiB block: a stamp (magic, write sequence, issue time, block number)
// and filler derived from them, so the checker can tell from any block which write it holds, and
// whether the whole block is intact.
export const BLOCK = 4096;
const MAGIC = 0x544d534f414b3031n; // "TMSOAK01"
const HEADER = 32;

/** The block as the write `seq` (issued at `atMs`) leaves it at block number `block`. */
export function stampBlock(buf: Buffer, seq: number, atMs: number, block: number): void {
  buf.writeBigUInt64BE(MAGIC, 0);
  buf.writeUInt32BE(seq, 8);
  buf.writeUInt32BE(block, 12);
  buf.writeDoubleBE(atMs, 16);
  buf.fill(0, 24, HEADER);
  fillFrom(buf, seq, block);
}

/** Filler: xorshift32 seeded from (seq, block) over half the block, then zeros (LZ4 gets something to do). */
function fillFrom(buf: Buffer, seq: number, block: number): void {
  let x = (Math.imul(seq, 0x9e3779b1) ^ Math.imul(block + 1, 0x85ebca6b)) >>> 0 || 1;
  for (let p = HEADER; p < BLOCK / 2; p += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32BE(x >>> 0, p);
  }
  buf.fill(0, BLOCK / 2, BLOCK);
}

export type Found = { kind: 'zero' } | { kind: 'stamp'; seq: number; atMs: number } | { kind: 'damaged'; why: string };

/** Which write a block holds: none (zeros), a stamp whose whole block is intact, or damage. */
export function readStamp(buf: Buffer, block: number): Found {
  if (buf.readBigUInt64BE(0) !== MAGIC) return buf.every((b) => b === 0) ? { kind: 'zero' } : { kind: 'damaged', why: 'no stamp' };
  const seq = buf.readUInt32BE(8);
  const at = buf.readUInt32BE(12);
  if (at !== block) return { kind: 'damaged', why: `stamp of block ${at}` };
  const atMs = buf.readDoubleBE(16);
  const want = Buffer.alloc(BLOCK);
  stampBlock(want, seq, atMs, block);
  return want.equals(buf) ? { kind: 'stamp', seq, atMs } : { kind: 'damaged', why: `write #${seq} torn or altered` };
}
