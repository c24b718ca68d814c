// A realistic source volume for the benchmarks: an ext4 filesystem (mkfs.ext4 -d, no mount needed)
// holding a folder of generated files, compressible text and incompressible random data, filling about
// two thirds of it; the rest is free space that reads as zeros. The image is fully allocated, as a
// block device is: no holes that a reader could skip.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { MiB } from './harness.js';

export interface VolumeSpec {
  sizeMiB: number;
  /** Share of the volume filled with file data (ext4 metadata comes on top). */
  fill: number;
  /** Share of the file data that is text; the rest is random bytes. */
  textShare: number;
}

export interface VolumeFacts {
  sizeBytes: number;
  files: number;
  textBytes: number;
  randomBytes: number;
  /** Bytes of the image in 4 KiB blocks that are not all zero. */
  nonZeroBytes: number;
  sha256: string;
}

const WORDS = (
  'replica volume block journal sequence checksum extent durable request response session user account ' +
  'order payment invoice customer warehouse shipment timeout retry connection database query index table ' +
  'cache miss hit latency error warning started stopped completed failed accepted rejected upstream ' +
  'downstream service handler worker queue message topic partition offset commit rollback snapshot'
).split(' ');
const LEVELS = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];

/** Log-like text: timestamps, levels, words, ids and numbers from a seeded generator. */
export function textData(bytes: number, seed: number): Buffer {
  let x = (seed * 2654435761) >>> 0 || 1;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
  const parts: string[] = [];
  let n = 0;
  let t = 1.7e12 + seed * 86_400_000;
  while (n < bytes) {
    t += rnd(5000);
    let line = `${new Date(t).toISOString()} ${LEVELS[rnd(LEVELS.length)]} [${WORDS[rnd(WORDS.length)]}-${rnd(16)}]`;
    const words = 4 + rnd(10);
    for (let i = 0; i < words; i++) line += rnd(4) === 0 ? ` ${WORDS[rnd(WORDS.length)]}=${rnd(1_000_000)}` : ` ${WORDS[rnd(WORDS.length)]}`;
    line += ` req=${rnd(0x7fffffff).toString(16)} ms=${rnd(2000)}\n`;
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

/** Write `image` as a fully allocated ext4 volume of spec.sizeMiB populated from a generated tree. */
export async function makeVolume(workDir: string, image: string, spec: VolumeSpec): Promise<VolumeFacts> {
  const tree = path.join(workDir, 'tree');
  await fsp.rm(tree, { recursive: true, force: true });
  const budget = Math.floor(spec.sizeMiB * spec.fill * MiB);
  let text = 0;
  let random = 0;
  let files = 0;
  for (let i = 0; text + random < budget; i++) {
    // 32 KiB .. 4 MiB, in 32 KiB steps, spread over a few folders.
    const size = Math.min(budget - text - random, (32 << 10) * (1 + ((i * 7919) % 128)));
    const isText = text <= (text + random + size) * spec.textShare;
    const dir = path.join(tree, isText ? 'logs' : 'data', `d${i % 16}`);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, `f${i}.${isText ? 'log' : 'bin'}`), isText ? textData(size, i) : randomBytes(size));
    if (isText) text += size;
    else random += size;
    files++;
  }
  // Allocate every block first and tell mke2fs not to discard (which would punch holes in a file).
  const fh = await fsp.open(image, 'w');
  try {
    const zeros = Buffer.alloc(4 * MiB);
    for (let off = 0; off < spec.sizeMiB * MiB; off += zeros.length) {
      await fh.write(zeros, 0, Math.min(zeros.length, spec.sizeMiB * MiB - off), off);
    }
  } finally {
    await fh.close();
  }
  execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,nodiscard', '-d', tree, image], { stdio: 'pipe' });
  await fsp.rm(tree, { recursive: true, force: true });
  const { nonZeroBytes, sha256 } = await scan(image);
  return { sizeBytes: spec.sizeMiB * MiB, files, textBytes: text, randomBytes: random, nonZeroBytes, sha256 };
}

/** sha256 of a file and how many of its 4 KiB blocks hold anything but zeros. */
export async function scan(file: string): Promise<{ nonZeroBytes: number; sha256: string }> {
  const h = createHash('sha256');
  const zero = Buffer.alloc(4096);
  let nonZeroBytes = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) {
    const b = chunk as Buffer;
    h.update(b);
    for (let off = 0; off < b.length; off += 4096) {
      const blk = b.subarray(off, Math.min(off + 4096, b.length));
      if (!blk.equals(zero.subarray(0, blk.length))) nonZeroBytes += blk.length;
    }
  }
  return { nonZeroBytes, sha256: h.digest('hex') };
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}
