// A realistic disk-image corpus for compression figures: an ext4 image (mkfs.ext4 -d, no mount needed)
// holding source code and text as found on servers (TypeScript's lib/ and the rest of node_modules:
// JavaScript, declarations, JSON, Markdown and a few native binaries), log files, incompressible random
// data, and free space that reads as zeros. Fully allocated, as a block device is.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { MiB, REPO_ROOT } from './harness.js';
import { scan, textData } from './volume.js';

export interface CorpusFacts {
  sizeBytes: number;
  typescriptLibBytes: number;
  nodeModulesBytes: number;
  logBytes: number;
  randomBytes: number;
  files: number;
  /** Bytes in 4 KiB blocks that are not all zero: what an initial replication sends. */
  nonZeroBytes: number;
  sha256: string;
}

/** Shares of the image: ~half of it holds data, the rest is free space. */
const SHARES = { nodeModules: 0.15, logs: 0.15, random: 0.1 };

/** Copy files under `from` into `to` (same relative paths) until `budget` bytes; returns bytes and files copied. */
async function copyTree(from: string, to: string, budget: number, skip: (rel: string) => boolean): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const walk = async (rel: string): Promise<void> => {
    const entries = (await fsp.readdir(path.join(from, rel), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      if (bytes >= budget) return;
      const r = path.join(rel, e.name);
      if (skip(r)) continue;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) {
        const size = (await fsp.stat(path.join(from, r))).size;
        if (bytes + size > budget) continue;
        await fsp.mkdir(path.join(to, rel), { recursive: true });
        await fsp.copyFile(path.join(from, r), path.join(to, r));
        bytes += size;
        files++;
      }
    }
  };
  await walk('');
  return { bytes, files };
}

export async function makeCorpus(workDir: string, image: string, sizeMiB: number): Promise<CorpusFacts> {
  const tree = path.join(workDir, 'corpus-tree');
  await fsp.rm(tree, { recursive: true, force: true });
  const size = sizeMiB * MiB;
  const nm = path.join(REPO_ROOT, 'node_modules');
  const ts = await copyTree(path.join(nm, 'typescript', 'lib'), path.join(tree, 'usr', 'lib', 'typescript'), size * 0.1, () => false);
  const mods = await copyTree(nm, path.join(tree, 'srv', 'app', 'node_modules'), size * SHARES.nodeModules, (rel) => rel === 'typescript' || rel === '.cache');
  let logs = 0;
  let files = ts.files + mods.files;
  for (let i = 0; logs < size * SHARES.logs; i++) {
    const n = Math.min(size * SHARES.logs - logs, (256 << 10) * (1 + (i % 16)));
    await fsp.mkdir(path.join(tree, 'var', 'log', 'app'), { recursive: true });
    await fsp.writeFile(path.join(tree, 'var', 'log', 'app', `app.log.${i}`), textData(Math.ceil(n), i));
    logs += Math.ceil(n);
    files++;
  }
  let random = 0;
  for (let i = 0; random < size * SHARES.random; i++) {
    const n = Math.ceil(Math.min(size * SHARES.random - random, 4 * MiB));
    await fsp.mkdir(path.join(tree, 'var', 'lib', 'blobs'), { recursive: true });
    await fsp.writeFile(path.join(tree, 'var', 'lib', 'blobs', `blob${i}.bin`), randomBytes(n)); // like media or encrypted data
    random += n;
    files++;
  }
  // Allocate every block first and tell mke2fs not to discard (which would punch holes in a file).
  const fh = await fsp.open(image, 'w');
  try {
    const zeros = Buffer.alloc(4 * MiB);
    for (let off = 0; off < size; off += zeros.length) await fh.write(zeros, 0, Math.min(zeros.length, size - off), off);
  } finally {
    await fh.close();
  }
  execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,nodiscard', '-d', tree, image], { stdio: 'pipe' });
  await fsp.rm(tree, { recursive: true, force: true });
  const { nonZeroBytes, sha256 } = await scan(image);
  return { sizeBytes: size, typescriptLibBytes: ts.bytes, nodeModulesBytes: mods.bytes, logBytes: logs, randomBytes: random, files, nonZeroBytes, sha256 };
}

/** The image's non-zero 4 KiB blocks, in order, in one file: the bytes an initial replication sends. */
export async function nonZeroBlocks(image: string, out: string): Promise<number> {
  const fh = await fsp.open(out, 'w');
  const zero = Buffer.alloc(4096);
  let n = 0;
  try {
    for await (const chunk of createReadStream(image, { highWaterMark: 4 * MiB })) {
      const b = chunk as Buffer;
      const keep: Buffer[] = [];
      for (let off = 0; off < b.length; off += 4096) {
        const blk = b.subarray(off, Math.min(off + 4096, b.length));
        if (!blk.equals(zero.subarray(0, blk.length))) keep.push(blk);
      }
      const out = Buffer.concat(keep);
      await fh.write(out);
      n += out.length;
    }
  } finally {
    await fh.close();
  }
  return n;
}

/** Bytes [offset, offset + length) of `image` as a file of its own (one agent's volume in the fan-in runs). */
export async function slice(image: string, out: string, offset: number, length: number): Promise<void> {
  const src = await fsp.open(image, 'r');
  const dst = await fsp.open(out, 'w');
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    for (let done = 0; done < length;) {
      const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, length - done), offset + done);
      if (bytesRead === 0) break;
      await dst.write(buf, 0, bytesRead, done);
      done += bytesRead;
    }
  } finally {
    await src.close();
    await dst.close();
  }
}
