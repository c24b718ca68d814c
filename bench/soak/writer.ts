// The application under test: one writer issuing writes of 1-8 stamped 4 KiB blocks at random places,
// one at a time, each opened O_DSYNC so a write that returned is on the disk. It records every write
// that completed (in memory for the checker, and as JSON lines in a log outside the volume).
import { constants, createWriteStream, promises as fsp } from 'node:fs';
import { BLOCK, stampBlock } from './stamp.js';
import type { Rng } from './rng.js';

export interface Write {
  seq: number;
  /** First block and number of blocks. */
  block: number;
  blocks: number;
  issuedMs: number;
  doneMs: number;
}

export class Writer {
  readonly history: Write[] = [];
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly file: string, private readonly blocks: number, private readonly logFile: string, private readonly rng: Rng, private readonly maxGapMs = 25) {}

  get bytesWritten(): number {
    return this.history.reduce((a, w) => a + w.blocks * BLOCK, 0);
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    const fh = await fsp.open(this.file, constants.O_RDWR | constants.O_DSYNC);
    const log = createWriteStream(this.logFile, { flags: 'a' });
    const buf = Buffer.alloc(8 * BLOCK);
    try {
      for (let seq = 1; this.running; seq++) {
        const n = this.rng.int(1, 9);
        const block = this.rng.int(0, this.blocks - n + 1);
        const issuedMs = Date.now();
        for (let i = 0; i < n; i++) stampBlock(buf.subarray(i * BLOCK, (i + 1) * BLOCK), seq, issuedMs, block + i);
        await fh.write(buf, 0, n * BLOCK, block * BLOCK);
        const w: Write = { seq, block, blocks: n, issuedMs, doneMs: Date.now() };
        this.history.push(w);
        log.write(JSON.stringify(w) + '\n');
        await new Promise((r) => setTimeout(r, this.rng.int(0, this.maxGapMs)));
      }
    } finally {
      await fh.close();
      await new Promise((r) => log.end(r));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}
