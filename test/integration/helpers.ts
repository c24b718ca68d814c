// Shared by the integration tests: volumes with data, a writer that keeps changing them, checksums.
import { randomBytes, randomInt } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import type { Lab } from '../../cli/lab.js';

export async function scratchDir(t: Test, prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `tm-${prefix}-`));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An image of `sizeMiB` whose first `dataMiB` are random and the rest zeros. */
export async function makeImage(file: string, sizeMiB: number, dataMiB: number): Promise<void> {
  const fh = await fsp.open(file, 'w');
  for (let i = 0; i < dataMiB; i++) await fh.write(randomBytes(1 << 20), 0, 1 << 20, i << 20);
  await fh.truncate(sizeMiB << 20);
  await fh.close();
}

/** The same sha256 the demo prints. */
export { sha256File as sha256 } from '../../cli/demo.js';

/** Random writes of 4 KiB..64 KiB (block-aligned) anywhere in the image, until stopped. Counts bytes. */
export function startWriter(file: string, sizeBytes: number, intervalMs = 20): { stop(): Promise<number> } {
  let written = 0;
  let running = true;
  const loop = (async () => {
    const fh = await fsp.open(file, 'r+');
    try {
      while (running) {
        const len = randomInt(1, 17) * 4096;
        const off = randomInt(0, Math.floor((sizeBytes - len) / 4096)) * 4096;
        await fh.write(randomBytes(len), 0, len, off);
        written += len;
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    } finally {
      await fh.close();
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return written;
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the master target received, from its own log: every differential once, and every resend. */
export async function received(l: Lab): Promise<{ distinct: number; resent: number }> {
  const bySeq = new Map<number, number>();
  let total = 0;
  for (const line of await l.logLines('mt')) {
    if (line.msg === 'differential durable' || line.msg === 'retransmitted differential skipped') {
      total += Number(line.rawBytes);
      bySeq.set(Number(line.seq), Number(line.rawBytes));
    }
  }
  const distinct = [...bySeq.values()].reduce((a, b) => a + b, 0);
  return { distinct, resent: total - distinct };
}
