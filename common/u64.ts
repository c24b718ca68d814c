// u64 little-endian fields as JS numbers (safe integers: offsets, sizes, counts) without a BigInt per
// call, which costs more than the rest of encoding an extent header; files are read and written by the
// million extents.

/** Write a non-negative safe integer as u64 little-endian at `at`. */
export function writeU64(b: Buffer, v: number, at: number): void {
  // BigInt() threw on these; a silent truncation would write another offset.
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 field: ${v} is not a non-negative safe integer`);
  b.writeUInt32LE(v % 0x100000000, at);
  b.writeUInt32LE(Math.floor(v / 0x100000000), at + 4);
}

/** Read a u64 little-endian at `at` as a number (exact up to 2^53; a larger value is not a safe integer). */
export function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x100000000;
}
