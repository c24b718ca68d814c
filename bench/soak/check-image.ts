// Is an image a prefix-closed state of the writer's history? With one writer issuing one write at a
// time, a crash-consistent image holds, for some K (its newest stamp), every write before K and maybe
// part of K: each block shows the last write below K to it, or K itself. Anything else (an older write,
// a write that never touched the block, a torn or altered block) is a violation, counted in blocks.
import { promises as fsp } from 'node:fs';
import type { Replay } from './history.js';
import { BLOCK, readStamp } from './stamp.js';

export interface ImageVerdict {
  /** Newest write the image holds (0: none). */
  newest: number;
  badBlocks: number;
  /** The first few violations, for the report. */
  examples: string[];
}

export async function readBlocks(file: string, blocks: number): Promise<Buffer> {
  const buf = Buffer.alloc(blocks * BLOCK);
  const fh = await fsp.open(file, 'r');
  try {
    for (let pos = 0; pos < buf.length; ) {
      const { bytesRead } = await fh.read(buf, pos, buf.length - pos, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return buf;
}

/** Check `image` as a crash-consistent point; `replay` is advanced to just below its newest write. */
export function checkPrefix(image: Buffer, replay: Replay): ImageVerdict {
  const blocks = image.length / BLOCK;
  const shown = new Int32Array(blocks);
  const examples: string[] = [];
  let bad = 0;
  let newest = 0;
  for (let b = 0; b < blocks; b++) {
    const f = readStamp(image.subarray(b * BLOCK, (b + 1) * BLOCK), b);
    if (f.kind === 'damaged') {
      shown[b] = -1;
      bad++;
      if (examples.length < 5) examples.push(`block ${b}: ${f.why}`);
    } else {
      shown[b] = f.kind === 'zero' ? 0 : f.seq;
      newest = Math.max(newest, shown[b]!);
    }
  }
  replay.advanceBelow(newest);
  const k = replay.write(newest);
  for (let b = 0; b < blocks; b++) {
    const s = shown[b]!;
    if (s < 0) continue;
    const inK = k !== undefined && b >= k.block && b < k.block + k.blocks;
    if (s === replay.last[b] || (inK && s === newest)) continue;
    bad++;
    if (examples.length < 5) examples.push(`block ${b}: holds write #${s}, expected #${replay.last[b]}${inK ? ` or #${newest}` : ''} (newest in image #${newest})`);
  }
  return { newest, badBlocks: bad, examples };
}

/** Blocks where two images differ. */
export function diffBlocks(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length; i += BLOCK) if (!a.subarray(i, i + BLOCK).equals(b.subarray(i, i + BLOCK))) out.push(i / BLOCK);
  return out;
}

/** Blocks of `image` that do not hold exactly the last write `replay` has applied to them. */
export function checkExact(image: Buffer, replay: Replay): ImageVerdict {
  const examples: string[] = [];
  let bad = 0;
  let newest = 0;
  for (let b = 0; b < image.length / BLOCK; b++) {
    const f = readStamp(image.subarray(b * BLOCK, (b + 1) * BLOCK), b);
    const s = f.kind === 'stamp' ? f.seq : f.kind === 'zero' ? 0 : -1;
    newest = Math.max(newest, s);
    if (s === replay.last[b]) continue;
    bad++;
    if (examples.length < 5) examples.push(`block ${b}: ${f.kind === 'damaged' ? f.why : `holds write #${s}`}, expected #${replay.last[b]}`);
  }
  return { newest, badBlocks: bad, examples };
}
