// Shared by the integration tests: volumes with data, a writer that keeps changing them, checksums.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import type { Lab } from '../../lab/lab.js';
import { Rng } from '../seed.js';

/** Streams numbered in call order, so each image and writer draws the same bytes on a replay. */
let streams = 0;

export async function scratchDir(t: Test, prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `tm-${prefix}-`));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An image of `sizeMiB` whose first `dataMiB` are random and the rest zeros. */
export async function makeImage(file: string, sizeMiB: number, dataMiB: number): Promise<void> {
  const rng = new Rng(`image:${path.basename(file)}:${streams++}`);
  const fh = await fsp.open(file, 'w');
  for (let i = 0; i < dataMiB; i++) await fh.write(rng.bytes(1 << 20), 0, 1 << 20, i << 20);
  await fh.truncate(sizeMiB << 20);
  await fh.close();
}

/** The same sha256 the demo prints. */
export { sha256File as sha256 } from '../../cli/demo.js';

/** The most `n` differentials of these sizes (largest first) can add up to. */
export function largestSum(sizes: number[], n: number): number {
  return sizes.slice(0, n).reduce((a, b) => a + b, 0);
}

/** Random writes of 4 KiB..64 KiB (block-aligned) anywhere in the image, until stopped. Counts bytes. */
export function startWriter(file: string, sizeBytes: number, intervalMs = 20): { stop(): Promise<number>; readonly written: number } {
  let written = 0;
  let running = true;
  const rng = new Rng(`writer:${streams++}`);
  const loop = (async () => {
    const fh = await fsp.open(file, 'r+');
    try {
      while (running) {
        const len = rng.int(1, 17) * 4096;
        const off = rng.int(0, Math.floor((sizeBytes - len) / 4096)) * 4096;
        await fh.write(rng.bytes(len), 0, len, off);
        written += len;
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    } finally {
      await fh.close();
    }
  })();
  return {
    get written() {
      return written;
    },
    async stop() {
      running = false;
      await loop;
      return written;
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `what` every 200 ms until it holds (true) or `ms` pass (false). */
export async function until(what: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await what()) return true;
    await sleep(200);
  }
  return false;
}

/** Poll `what` every 200 ms until it holds; past `ms`, fail with `timed out waiting for: <label>`. */
export async function waitFor(what: () => Promise<boolean>, ms: number, label: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${label}`);
    await sleep(200);
  }
}

/**
 * What the master target received, from its own log: every differential once, and every resend. `durable`
 * and `resends` count the log lines, so a check can require that the counted event happened at all (a
 * renamed message would otherwise pass every upper bound at zero); `sizes` are the differentials' sizes, largest first.
 */
export async function received(l: Lab): Promise<{ distinct: number; resent: number; durable: number; resends: number; sizes: number[] }> {
  const bySeq = new Map<number, number>();
  let total = 0;
  let durable = 0;
  let resends = 0;
  // A SIGKILL just after a differential became durable can cut its 'differential durable' line (the
  // acknowledgement died with it, and the sender learns it is held from the next handshake, so it never
  // comes again): its 'differential applied' line, written after the restart, still names it.
  const applied = new Map<number, number>();
  for (const line of await l.logLines('mt')) {
    if (line.msg === 'differential applied') applied.set(Number(line.seq), Number(line.bytes));
    const dup = line.msg === 'retransmitted differential skipped';
    if (line.msg === 'differential durable' || dup) {
      if (dup) resends++;
      else durable++;
      total += Number(line.rawBytes);
      bySeq.set(Number(line.seq), Number(line.rawBytes));
    }
  }
  for (const [seq, bytes] of applied) if (!bySeq.has(seq)) bySeq.set(seq, bytes);
  const distinct = [...bySeq.values()].reduce((a, b) => a + b, 0);
  return { distinct, resent: total - distinct, durable, resends, sizes: [...bySeq.values()].sort((a, b) => b - a) };
}
