// Checksums: crc32c (Castagnoli, SIMD in @node-rs/crc32) guards frames, files and extents;
// xxh64 identifies block contents for comparison. Collision risk is discussed in docs/FORMAT.md.
import { crc32c } from '@node-rs/crc32';
import { xxh64 } from '@node-rs/xxhash';

/** crc32c of data, continuing from `seed` (the crc of everything before it). */
export function crc(data: Uint8Array, seed = 0): number {
  return crc32c(data as Buffer, seed) >>> 0;
}

export function blockHash(data: Uint8Array): bigint {
  return xxh64(data as Buffer);
}

