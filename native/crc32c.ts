// The SSE4.2 crc32c of the bytes addon (native/src/crc32c.c), when it is built and the CPU has SSE4.2.
// Loaded on its own, not through native/lz4.ts (which needs common/checksum.ts): common/checksum.ts
// takes it where present and @node-rs/crc32 otherwise; both give the same values.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type Crc32c = (data: Uint8Array, seed: number) => number;

/** The addon's crc32c, or null (not built, not loadable, or no SSE4.2: the caller's fallback then). */
export function nativeCrc32c(): Crc32c | null {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'native', 'binding.gyp'))) {
    if (path.dirname(dir) === dir) return null;
    dir = path.dirname(dir);
  }
  const file = path.join(dir, 'native', 'build', 'Release', 'tidemark_bytes.node');
  try {
    const addon = createRequire(import.meta.url)(file) as { crc32c?: Crc32c };
    return addon.crc32c ?? null;
  } catch {
    return null; // native/lz4.ts reports an addon that does not load
  }
}
