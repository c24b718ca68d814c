// Checksums: crc32c (Castagnoli) guards frames, files and extents; xxh64 identifies block contents for
// comparison. Collision risk is discussed in docs/FORMAT.md. crc32c is the bytes addon's SSE4.2 code
// (native/src/crc32c.c, ~3x @node-rs/crc32's speed on this machine) where built, else @node-rs/crc32.
import { crc32c } from '@node-rs/crc32';
import { xxh64 } from '@node-rs/xxhash';
import { nativeCrc32c } from '../native/crc32c.js';

const fast = process.env.TIDEMARK_CRC32C === 'portable' ? null : nativeCrc32c();

/** Which crc32c implementation is in use (for benchmarks and status). */
export const crcImplementation: 'sse4.2' | '@node-rs/crc32' = fast ? 'sse4.2' : '@node-rs/crc32';

/** crc32c of data, continuing from `seed` (the crc of everything before it). */
export const crc: (data: Uint8Array, seed?: number) => number = fast
  ? (data, seed = 0) => fast(data, seed)
  : (data, seed = 0) => crc32c(data as Buffer, seed) >>> 0;

export function blockHash(data: Uint8Array): bigint {
  return xxh64(data as Buffer);
}
