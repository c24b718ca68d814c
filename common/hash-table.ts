// A persisted table of one 64-bit hash per block (the scan tracker's baseline, the master target's
// replica hashes). Layout in docs/FORMAT.md §3. Version 3 keeps the table in self-checking 4 KiB pages
// (511 hashes, the page's index and a crc32c) after a 4 KiB header page that records the sequence the
// table reflects, so a save rewrites only the pages that changed, in place: the cost per differential
// follows what changed, not the volume's size. Versions 1 and 2 (one crc over the whole body) are still
// read, and rewritten whole as version 3 at their next save.
import { promises as fsp } from 'node:fs';
import { crc } from './checksum.js';
import { writeFileDurable } from './durable.js';
import { tmError } from './errors.js';
import { checkStateBuffer } from './state-file.js';

const MAGIC = 0x48424d54; // "TMBH"
const VERSION = 3;
/** Where each version's header crc sits (it covers every byte before it) and where its body starts. */
const LAYOUT: Record<number, { crcAt: number; body: number }> = { 1: { crcAt: 28, body: 32 }, 2: { crcAt: 36, body: 40 }, 3: { crcAt: 36, body: 4096 } };
/** Version 3: the header page, then the table's pages, each at a multiple of PAGE in the file. */
export const PAGE = 4096;
/** Hashes per page: the page's last 8 bytes are its index (u32) and the crc32c of everything before it. */
export const PAGE_HASHES = (PAGE - 8) / 8;

/** Encoded pages of a table taken by HashTableFile.capture: runs of neighbouring pages, or every page (whole). */
export interface CapturedPages {
  whole: boolean;
  runs: Array<{ page: number; data: Buffer }>;
}

export interface LoadedHashTable {
  hashes: BigUint64Array;
  /** The sequence number whose application the table reflects; null in a version 1 file (not recorded). */
  seq: number | null;
}

/**
 * One table file and what changed in memory since it was last saved. The owner changes its
 * `BigUint64Array` and says which entries it changed (`changed`); `save` writes those pages in place.
 */
export class HashTableFile {
  private dirty: Uint8Array = new Uint8Array(0);
  private dirtyCount = 0;
  /** The file must be written whole: none yet, an older version, or an in-place save that failed. */
  private whole = true;
  readonly blockCount: number;

  constructor(
    readonly file: string,
    readonly blockSize: number,
    readonly sizeBytes: number,
  ) {
    this.blockCount = Math.ceil(sizeBytes / blockSize);
    this.dirty = new Uint8Array(Math.ceil(this.blockCount / PAGE_HASHES));
  }

  /** The table in the file, or null if there is none. Damage or other geometry is an error. */
  async load(): Promise<LoadedHashTable | null> {
    const raw = await fsp.readFile(this.file).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    this.whole = true;
    if (raw === null) return null;
    const version = raw.length >= 6 ? raw.readUInt16LE(4) : 0;
    const layout = LAYOUT[version] ?? LAYOUT[VERSION]!; // a newer or garbled version is refused by the check below
    const buf = checkStateBuffer(this.file, raw, { magic: MAGIC, version: VERSION, headerCrcAt: layout.crcAt }, this.blockSize, this.sizeBytes);
    const seq = version >= 2 ? Number(buf.readBigUInt64LE(28)) : null;
    const hashes = version >= 3 ? this.decodePages(buf) : this.decodeWhole(buf, layout.body);
    this.whole = version < 3;
    this.clean();
    return { hashes, seq };
  }

  /** Entries [first, end) of the table changed since the last save. */
  changed(first: number, end = first + 1): void {
    if (end <= first) return;
    const last = Math.floor((end - 1) / PAGE_HASHES);
    for (let p = Math.floor(first / PAGE_HASHES); p <= last; p++) {
      if (!this.dirty[p]) {
        this.dirty[p] = 1;
        this.dirtyCount++;
      }
    }
  }

  /** Every entry changed (a new or rebuilt table): the next save writes the whole file. */
  changedAll(): void {
    this.whole = true;
  }

  /** Pages the next save will write (every page when it writes the file whole). */
  get pendingPages(): number {
    return this.whole ? this.dirty.length : this.dirtyCount;
  }

  /**
   * Make `hashes` durable as reflecting `seq`: the changed pages and the header rewritten in place under
   * one fdatasync, or (new table, older version, an earlier failure) the whole file through tmp + rename.
   * A crash part-way leaves each page old or new, or torn — which its crc reveals, and a damaged table is
   * never trusted. A mix of old and new pages is what a crash before the save leaves too: the differential
   * being applied is not yet done, so it is applied again and rewrites the same entries (FORMAT.md §3.2).
   */
  async save(hashes: BigUint64Array, seq = 0): Promise<void> {
    if (!(await this.saveCaptured(this.capture(hashes), seq))) {
      this.whole = true; // the file is gone: written whole
      await this.saveCaptured(this.capture(hashes), seq);
    }
  }

  /**
   * The pages the next save would write, encoded now (and no longer counted as changed), for
   * saveCaptured to write later while `hashes` changes on: the master target's applier saves a group's
   * table while it writes the next group (Applier.commit). Captures must be saved in the order taken.
   */
  capture(hashes: BigUint64Array): CapturedPages {
    if (hashes.length !== this.blockCount) throw new Error(`hash table of ${hashes.length} entries for ${this.blockCount} blocks`);
    const whole = this.whole;
    const runs: CapturedPages['runs'] = [];
    const pages = this.dirty.length;
    for (let p = 0; p < pages && (whole || this.dirtyCount > 0); p++) {
      if (!whole && !this.dirty[p]) continue;
      let end = p + 1;
      while (end < pages && (whole || this.dirty[end])) end++;
      runs.push({ page: p, data: Buffer.concat(Array.from({ length: end - p }, (_, i) => this.encodePage(hashes, p + i))) });
      p = end - 1;
    }
    this.clean();
    this.whole = false; // a failed saveCaptured sets it again
    return { whole, runs };
  }

  /**
   * Write what capture() took, as reflecting `seq`. False (nothing written; the next capture is whole) when
   * it holds only changed pages and the file is gone. A failure throws and makes the next capture whole.
   */
  async saveCaptured(c: CapturedPages, seq: number): Promise<boolean> {
    try {
      if (c.whole) {
        await writeFileDurable(this.file, Buffer.concat([this.header(seq), ...c.runs.map((r) => r.data)]));
        return true;
      }
      const done = await this.saveInPlace(c.runs, seq);
      if (!done) this.whole = true;
      return done;
    } catch (e) {
      // What reached the file is unknown: the next save writes it whole.
      this.whole = true;
      throw e;
    }
  }

  /** Something captured will not be saved (the save it was for was abandoned): the next capture is whole. */
  uncaptured(): void {
    this.whole = true;
  }

  /** False when the file is gone. */
  private async saveInPlace(runs: CapturedPages['runs'], seq: number): Promise<boolean> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.file, 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    try {
      // Each run of neighbouring pages is one positional write; the runs go to the thread pool together.
      const writes: Promise<unknown>[] = runs.map((r) => fh.write(r.data, 0, r.data.length, PAGE * (r.page + 1)));
      const head = this.header(seq);
      writes.push(fh.write(head, 0, LAYOUT[VERSION]!.crcAt + 4, 0));
      const failed = (await Promise.allSettled(writes)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      await fh.datasync();
      return true;
    } finally {
      await fh.close();
    }
  }

  private clean(): void {
    this.dirty.fill(0);
    this.dirtyCount = 0;
  }

  private header(seq: number): Buffer {
    const { crcAt } = LAYOUT[VERSION]!;
    const head = Buffer.alloc(PAGE);
    head.writeUInt32LE(MAGIC, 0);
    head.writeUInt16LE(VERSION, 4);
    head.writeUInt32LE(this.blockSize, 8);
    head.writeBigUInt64LE(BigInt(this.sizeBytes), 16);
    head.writeUInt32LE(PAGE_HASHES, 24);
    head.writeBigUInt64LE(BigInt(seq), 28);
    head.writeUInt32LE(crc(head.subarray(0, crcAt)), crcAt);
    return head;
  }

  /** Page p as stored: its hashes, its index, the crc32c of both. A full page is exactly PAGE bytes. */
  private encodePage(hashes: BigUint64Array, p: number): Buffer {
    const first = p * PAGE_HASHES;
    const n = Math.min(PAGE_HASHES, hashes.length - first);
    const page = Buffer.alloc(n === PAGE_HASHES ? PAGE : n * 8 + 8);
    Buffer.from(hashes.buffer, hashes.byteOffset + first * 8, n * 8).copy(page);
    page.writeUInt32LE(p, n * 8);
    page.writeUInt32LE(crc(page.subarray(0, n * 8 + 4)), n * 8 + 4);
    return page;
  }

  private damaged(why: string): Error {
    return tmError('TM_ERR_STATE_CORRUPT', `${this.file}: hash table damaged (${why})`, { path: this.file });
  }

  private decodePages(buf: Buffer): BigUint64Array {
    const count = this.blockCount;
    if (buf.readUInt32LE(24) !== PAGE_HASHES) throw this.damaged('page geometry');
    // The header's crc covers its fields; the rest of its page must read as written: zeros.
    if (buf.length < PAGE || buf.subarray(LAYOUT[VERSION]!.crcAt + 4, PAGE).some((b) => b !== 0)) throw this.damaged('header page');
    if (buf.length !== fileLength(count)) throw this.damaged('length');
    const hashes = new BigUint64Array(count);
    const bytes = Buffer.from(hashes.buffer);
    for (let p = 0; p * PAGE_HASHES < count; p++) {
      const n = Math.min(PAGE_HASHES, count - p * PAGE_HASHES);
      const at = PAGE * (p + 1);
      const page = buf.subarray(at, at + n * 8 + 8);
      if (page.readUInt32LE(n * 8) !== p || crc(page.subarray(0, n * 8 + 4)) !== page.readUInt32LE(n * 8 + 4)) throw this.damaged(`page ${p}`);
      page.copy(bytes, p * PAGE_HASHES * 8, 0, n * 8);
    }
    return hashes;
  }

  /** Versions 1 and 2: the body after the header, one crc over it at offset 24. */
  private decodeWhole(buf: Buffer, bodyAt: number): BigUint64Array {
    const body = buf.subarray(bodyAt);
    if (body.length !== this.blockCount * 8 || crc(body) !== buf.readUInt32LE(24)) throw this.damaged('body');
    const copy = Buffer.from(body); // aligned for the typed array
    return new BigUint64Array(copy.buffer, copy.byteOffset, this.blockCount);
  }
}

/** Bytes of a version 3 file holding `count` hashes. */
function fileLength(count: number): number {
  const full = Math.floor(count / PAGE_HASHES);
  const rest = count % PAGE_HASHES;
  return PAGE * (1 + full) + (rest > 0 ? rest * 8 + 8 : 0);
}

/** The table in `file` with the sequence it reflects, or null if there is none. Damage or other geometry is an error. */
export async function loadHashTableAt(file: string, blockSize: number, sizeBytes: number): Promise<LoadedHashTable | null> {
  return new HashTableFile(file, blockSize, sizeBytes).load();
}

/** The table in `file`, or null if there is none. Damage or other geometry is an error. */
export async function loadHashTable(file: string, blockSize: number, sizeBytes: number): Promise<BigUint64Array | null> {
  return (await loadHashTableAt(file, blockSize, sizeBytes))?.hashes ?? null;
}

/** Write the whole table durably, recording that it reflects everything applied up to `seq` (0: not tracked). */
export async function saveHashTable(file: string, blockSize: number, sizeBytes: number, hashes: BigUint64Array, seq = 0): Promise<void> {
  await new HashTableFile(file, blockSize, sizeBytes).save(hashes, seq);
}
