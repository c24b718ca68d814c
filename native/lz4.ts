// LZ4 blocks through the project's own addon (native/src/lz4.c over the system's liblz4, the `lz4` CLI's
// library): output goes into buffers that are neither allocated per call nor zeroed. The stored form is
// the one lz4-napi wrote before (docs/FORMAT.md "LZ4 extents"): u32 LE raw length, then the block.
//
// Compression writes into a reused scratch buffer and copies the result out at its exact length, so a
// cached extent holds no slack; the scratch buffers are one for the event loop and one per pooled call
// in flight, kept for reuse. Decompression writes straight into the extent's final buffer.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compress as napiCompress, compressSync as napiCompressSync, uncompressSync as napiUncompressSync } from 'lz4-napi';
import { extentPool } from '../common/buffer-pool.js';
import { blockHash } from '../common/checksum.js';
import { tmError } from '../common/errors.js';

interface BytesAddon {
  compress(src: Buffer, dst: Buffer, dstOffset: number, limit: number): number;
  compressAsync(src: Buffer, dst: Buffer, dstOffset: number, limit: number): Promise<number>;
  decompress(src: Buffer, dst: Buffer): number;
  decompressAsync(src: Buffer, dst: Buffer): Promise<number>;
  bound(length: number): number;
  leafHashes(data: Buffer, blockSize: number, out: BigUint64Array): void;
  version: string;
}

let addon: BytesAddon | undefined;

/**
 * Where the addon was not built (liblz4-dev or libxxhash-dev missing at `npm ci`; binding.gyp): the same
 * stored bytes through lz4-napi and per-block xxh64, at their cost (fresh zeroed buffers, one call per block).
 */
export const portable: BytesAddon = {
  compress: (src, dst, off, limit) => place(napiCompressSync(src), dst, off, limit),
  compressAsync: async (src, dst, off, limit) => place(await napiCompress(src), dst, off, limit),
  decompress: (src, dst) => unprefixed(src, dst),
  decompressAsync: async (src, dst) => unprefixed(src, dst),
  bound: (n) => 4 + n + Math.floor(n / 255) + 16,
  leafHashes: (data, blockSize, out) => {
    for (let i = 0; i < out.length; i++) out[i] = blockHash(data.subarray(i * blockSize, (i + 1) * blockSize));
  },
  version: 'lz4-napi (tidemark_bytes not built)',
};

function place(stored: Buffer, dst: Buffer, off: number, limit: number): number {
  if (stored.length > limit || off + stored.length > dst.length) return 0;
  stored.copy(dst, off);
  return stored.length;
}

function unprefixed(block: Buffer, dst: Buffer): number {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32LE(dst.length);
  let raw: Buffer;
  try {
    raw = napiUncompressSync(Buffer.concat([prefix, block]));
  } catch (e) {
    throw Object.assign(new Error(`LZ4 block does not decode: ${(e as Error).message}`), { code: 'LZ4_MALFORMED' });
  }
  raw.copy(dst, 0, 0, Math.min(raw.length, dst.length));
  return raw.length;
}

/** Whether the native addon is in use (false: the portable fallback). */
export function lz4Native(): boolean {
  return load() !== portable;
}

function load(): BytesAddon {
  if (addon === undefined) {
    const here = path.dirname(fileURLToPath(import.meta.url));
    let root = here;
    while (!fs.existsSync(path.join(root, 'native', 'binding.gyp'))) {
      if (path.dirname(root) === root) throw tmError('TM_ERR_NATIVE', `LZ4 addon: no native/binding.gyp above ${here}`, { path: here });
      root = path.dirname(root);
    }
    const file = path.join(root, 'native', 'build', 'Release', 'tidemark_bytes.node');
    if (!fs.existsSync(file) && fs.existsSync(path.join(root, 'native', 'build', 'Release', 'tidemark_native.node'))) {
      // Built without liblz4's and xxhash's headers (binding.gyp has_lz4): the portable path.
      addon = portable;
      return addon;
    }
    try {
      addon = createRequire(import.meta.url)(file) as BytesAddon;
    } catch (e) {
      throw tmError('TM_ERR_NATIVE', `load native addon ${file}: ${(e as Error).message}; build it with "npm run build:native"`, { path: file }, e);
    }
  }
  return addon;
}

/** The LZ4 library version compiled in ("1.9.4"), or what stands in for it. */
export function lz4Version(): string {
  return load().version;
}

/** Largest stored form (prefix + block) of `length` raw bytes. */
export function lz4Bound(length: number): number {
  return load().bound(length);
}

const scratchFree: Buffer[] = [];

function takeScratch(size: number): Buffer {
  const i = scratchFree.findIndex((b) => b.length >= size);
  if (i >= 0) return scratchFree.splice(i, 1)[0]!;
  // Scratch buffers only grow (to the largest extent seen, MAX_EXTENT_BYTES at most) and only as many
  // exist as calls were ever in flight at once.
  return Buffer.allocUnsafeSlow(Math.max(size, 64 * 1024));
}

function giveScratch(b: Buffer): void {
  scratchFree.push(b);
}

function exact(scratch: Buffer, n: number): Buffer | null {
  if (n === 0) return null;
  const out = Buffer.allocUnsafe(n);
  scratch.copy(out, 0, 0, n);
  return out;
}

/**
 * The stored LZ4 form of `raw` (u32 LE length + block) when it is at most `limit` bytes, else null
 * (compression stops as soon as the output passes the limit). On the calling thread.
 */
export function lz4Compress(raw: Buffer, limit: number): Buffer | null {
  const a = load();
  const cap = Math.min(limit, a.bound(raw.length));
  const s = takeScratch(cap);
  try {
    return exact(s, a.compress(raw, s, 0, cap));
  } finally {
    giveScratch(s);
  }
}

/** lz4Compress on the libuv thread pool. `raw` must not change until the promise settles. */
export async function lz4CompressAsync(raw: Buffer, limit: number): Promise<Buffer | null> {
  const a = load();
  const cap = Math.min(limit, a.bound(raw.length));
  const s = takeScratch(cap);
  try {
    return exact(s, await a.compressAsync(raw, s, 0, cap));
  } finally {
    giveScratch(s);
  }
}

/** Raw bytes of an LZ4 block (no prefix) that must decode to exactly `length` bytes; throws LZ4_MALFORMED otherwise. */
export function lz4Decompress(block: Buffer, length: number): Buffer {
  // From the extent pool: the master target's applier gives it back once the differential is committed.
  const out = extentPool.take(length);
  const n = load().decompress(block, out);
  if (n !== length) throw short(n, length);
  return out;
}

/** lz4Decompress on the libuv thread pool. */
export async function lz4DecompressAsync(block: Buffer, length: number): Promise<Buffer> {
  const out = extentPool.take(length);
  const n = await load().decompressAsync(block, out);
  if (n !== length) throw short(n, length);
  return out;
}

function short(n: number, length: number): Error {
  return Object.assign(new Error(`LZ4 block decodes to ${n} bytes, not the recorded ${length}`), { code: 'LZ4_MALFORMED' });
}

/** xxh64 (seed 0) of each `blockSize` block of `data` (the last may be short), in one native call. */
export function leafHashesNative(data: Buffer, blockSize: number): BigUint64Array {
  const out = new BigUint64Array(Math.ceil(data.length / blockSize));
  load().leafHashes(data, blockSize, out);
  return out;
}
