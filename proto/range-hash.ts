// Block and range hashes shared by both ends of a resync. A block's (leaf) hash is xxh64 of its bytes;
// a range's hash is xxh64 of its leaves as stored in memory (u64 little-endian on the hosts we run on),
// so either side computes it from its hash table alone.
import { blockHash } from '../common/checksum.js';
import { leafHashesNative } from '../native/lz4.js';

/**
 * Leaf hashes of consecutive blocks in `data` (the last one may be short): blockHash of each, computed in
 * one native call (a call, a view and a BigInt per 4 KiB block cost more than the hashing itself).
 */
export function leafHashes(data: Buffer, blockSize: number): BigUint64Array {
  return leafHashesNative(data, blockSize);
}

/** Hash of range `index` (blocks [index*rangeBlocks, +rangeBlocks) clipped to the table). */
export function rangeHash(leaves: BigUint64Array, index: number, rangeBlocks: number, firstBlock = 0): bigint {
  const start = index * rangeBlocks - firstBlock;
  const end = Math.min(start + rangeBlocks, leaves.length);
  return blockHash(Buffer.from(leaves.buffer, leaves.byteOffset + start * 8, (end - start) * 8));
}

/**
 * The wire form (as encodeHashes) of the hashes of `ranges` (ascending range indexes), each as rangeHash
 * gives it, computed one run of neighbouring ranges per native call rather than a call and a BigInt per range.
 */
export function rangeHashes(leaves: BigUint64Array, ranges: number[], rangeBlocks: number, firstBlock = 0): Buffer {
  const out = Buffer.allocUnsafe(ranges.length * 8);
  const bytes = Buffer.from(leaves.buffer, leaves.byteOffset, leaves.byteLength);
  let i = 0;
  while (i < ranges.length) {
    let j = i + 1;
    while (j < ranges.length && ranges[j] === ranges[j - 1]! + 1) j++;
    const start = ranges[i]! * rangeBlocks - firstBlock;
    const end = Math.min((ranges[j - 1]! + 1) * rangeBlocks - firstBlock, leaves.length);
    // Consecutive ranges are consecutive runs of leaves (the last one clipped, as rangeHash clips it).
    const h = start >= 0 && start < end ? leafHashesNative(bytes.subarray(start * 8, end * 8), rangeBlocks * 8) : null;
    if (h && h.length === j - i) Buffer.from(h.buffer, h.byteOffset, h.byteLength).copy(out, i * 8);
    else for (let k = i; k < j; k++) out.writeBigUInt64LE(rangeHash(leaves, ranges[k]!, rangeBlocks, firstBlock), k * 8);
    i = j;
  }
  return out;
}

/** The wire form of several range hashes: 8 bytes each, little-endian. */
export function encodeHashes(hashes: bigint[]): Buffer {
  const b = Buffer.allocUnsafe(hashes.length * 8);
  hashes.forEach((h, i) => b.writeBigUInt64LE(h, i * 8));
  return b;
}

export function decodeHashes(b: Uint8Array): bigint[] {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out: bigint[] = [];
  for (let i = 0; i + 8 <= buf.length; i += 8) out.push(buf.readBigUInt64LE(i));
  return out;
}
