// The dirty map: one bit per block of a volume, set while the block may differ from what the journal
// last captured. Persisted as a list of runs (so its size follows how dirty the volume is, not how big),
// together with the tracker's own metadata, in one durable file: docs/FORMAT.md §9.
import { crc } from '../../common/checksum.js';
import { writeFileDurable } from '../../common/durable.js';
import { tmError } from '../../common/errors.js';
import { readStateFile } from '../../common/state-file.js';

const MAGIC = 0x4d444d54; // "TMDM"
const VERSION = 1;
const HEADER = 40;
const RUN = 16;

export class DirtyMap {
  private readonly words: Uint32Array;
  /** Number of set blocks. */
  count = 0;

  constructor(readonly blockCount: number) {
    this.words = new Uint32Array(Math.ceil(blockCount / 32));
  }

  copy(): DirtyMap {
    const c = new DirtyMap(this.blockCount);
    c.words.set(this.words);
    c.count = this.count;
    return c;
  }

  has(block: number): boolean {
    return (this.words[block >>> 5]! & (1 << (block & 31))) !== 0;
  }

  /** Mark blocks [first, end). */
  set(first: number, end: number): void {
    end = Math.min(end, this.blockCount);
    for (let b = Math.max(0, first); b < end; b++) {
      const w = b >>> 5;
      const bit = 1 << (b & 31);
      if ((this.words[w]! & bit) === 0) {
        this.words[w]! |= bit;
        this.count++;
      }
    }
  }

  /** Unmark blocks [first, end). */
  clear(first: number, end: number): void {
    end = Math.min(end, this.blockCount);
    for (let b = Math.max(0, first); b < end; b++) {
      const w = b >>> 5;
      const bit = 1 << (b & 31);
      if ((this.words[w]! & bit) !== 0) {
        this.words[w]! &= ~bit;
        this.count--;
      }
    }
  }

  /** Runs of set blocks as [first, end), in order, each at most maxRun blocks long. */
  *runs(maxRun = Number.MAX_SAFE_INTEGER): Generator<[number, number]> {
    let b = 0;
    while (b < this.blockCount) {
      const w = this.words[b >>> 5]!;
      if (w === 0 && (b & 31) === 0) {
        b += 32; // a clean word: skip it whole
        continue;
      }
      if (!this.has(b)) {
        b++;
        continue;
      }
      const first = b;
      while (b < this.blockCount && this.has(b) && b - first < maxRun) b++;
      yield [first, b];
    }
  }

  /** Write the map and `meta` durably to `file`. */
  async save(file: string, blockSize: number, sizeBytes: number, meta: unknown): Promise<void> {
    const runs = [...this.runs()];
    const metaBuf = Buffer.from(JSON.stringify(meta));
    const body = Buffer.alloc(metaBuf.length + runs.length * RUN);
    metaBuf.copy(body, 0);
    runs.forEach(([first, end], i) => {
      body.writeBigUInt64LE(BigInt(first), metaBuf.length + i * RUN);
      body.writeBigUInt64LE(BigInt(end - first), metaBuf.length + i * RUN + 8);
    });
    const head = Buffer.alloc(HEADER);
    head.writeUInt32LE(MAGIC, 0);
    head.writeUInt16LE(VERSION, 4);
    head.writeUInt32LE(blockSize, 8);
    head.writeUInt32LE(metaBuf.length, 12);
    head.writeBigUInt64LE(BigInt(sizeBytes), 16);
    head.writeUInt32LE(runs.length, 24);
    head.writeUInt32LE(crc(body), 28);
    head.writeUInt32LE(crc(head.subarray(0, 32)), 32);
    await writeFileDurable(file, Buffer.concat([head, body]));
  }

  /** The map and metadata in `file`; null if there is none. Damage or other geometry is an error. */
  static async load(file: string, blockSize: number, sizeBytes: number): Promise<{ map: DirtyMap; meta: unknown } | null> {
    const buf = await readStateFile(file, { magic: MAGIC, version: VERSION, headerCrcAt: 32 }, blockSize, sizeBytes);
    if (buf === null) return null;
    const metaLength = buf.readUInt32LE(12);
    const runCount = buf.readUInt32LE(24);
    const body = buf.subarray(HEADER);
    if (body.length !== metaLength + runCount * RUN || crc(body) !== buf.readUInt32LE(28)) {
      throw tmError('TM_ERR_STATE_CORRUPT', `${file}: dirty map damaged`, { path: file });
    }
    const map = new DirtyMap(Math.ceil(sizeBytes / blockSize));
    for (let i = 0; i < runCount; i++) {
      const first = Number(body.readBigUInt64LE(metaLength + i * RUN));
      map.set(first, first + Number(body.readBigUInt64LE(metaLength + i * RUN + 8)));
    }
    return { map, meta: JSON.parse(body.subarray(0, metaLength).toString('utf8')) };
  }
}
