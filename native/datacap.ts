// Data mode's kernel capture (native/bpf/datacap.bpf.c, loaded by native/src/datacap.c): every write
// request of one disk, with its data, in issue order. This file checks that the host can run it
// (refusing with TM_ERR_UNSUPPORTED and the fallback, tracker "blocktrace"), mounts bpffs if needed, and
// parses ring records (docs/FORMAT.md, "Data-mode ring records").
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmError } from '../common/errors.js';

export const DC_HDR = 32;
export const DC_WRITE = 0x1;
export const DC_DISCARD = 0x2;
export const DC_ZEROES = 0x4;
export const DC_FLUSH = 0x8;
export const DC_LAST = 0x10;
export const DC_MARK = 0x20;
/** Set by the reader thread: the record carries its data's crc32c (native/bpf/datacap.h). */
export const DC_CRC = 0x40;
/** Bitmaps kept by the program: writes of epoch 0 and 1 (alternating) and ranges it could not capture. */
export const BITS_EPOCH0 = 0;
export const BITS_DROPPED = 2;

export interface DataRecord {
  /** Completion number: all records of one completion share it. */
  seq: number;
  offset: number;
  length: number;
  flags: number;
  epoch: number;
  piece: number;
  /** The written bytes (DC_WRITE), a view into the buffer take() returned. */
  data: Buffer | null;
  /** crc32c of data, computed by the reader thread as it queued the record; null when it did not (no SSE4.2). */
  crc: number | null;
}

export interface CaptureStats {
  completions: number;
  records: number;
  /** Completions (or their tails) the program could not put in the ring: their ranges are in the dropped bitmap. */
  drops: number;
  droppedBytes: number;
  errors: number;
  /** Records the reader thread could not queue (queue bound reached): also in the dropped bitmap. */
  userDrops: number;
  epoch: number;
  queuedBytes: number;
  calibrated: number;
  /** 1: the reader runs SCHED_FIFO; negative: asked for and refused (-errno); 0: not asked. */
  schedFifo: number;
  /** Requests the issue program was skipped for (kernel recursion_misses): their data was not captured. */
  issueSkips: number;
  /** Completions the completion program was skipped for (recursion_misses). */
  endSkips: number;
  /** Write-group completions the completion program saw; of those, requests whose issue was not captured (re-read). */
  ends: number;
  unseen: number;
  /** Requests requeued (issued, and captured, again later). */
  requeues: number;
  /** Empty cache-flush writes (never issued) counted at their start; statWrites includes them. */
  flushStarts: number;
  /** Write completions with no bytes in this volume, and completions of other operations (ignored). */
  empty: number;
  otherOps: number;
  /** Requests /sys/block/X/stat counts too (write group, discards): issued minus requeued, plus completed unseen. */
  statWrites: number;
  statDiscards: number;
  /** Kernel time in the issue and completion programs and their run counts (-1 unknown; they move only while kernel.bpf_stats_enabled=1). */
  issueRunNs: number;
  issueRuns: number;
  endRunNs: number;
  endRuns: number;
  /** The reader thread's id (0 until it runs): its CPU time is in /proc/self/task/<tid>/stat. */
  readerTid: number;
}

interface Addon {
  open(obj: string, pinDir: string, major: number, minor: number, start: number, end: number, chunkShift: number, ringBytes: number, maxQueue: number, fifo: number, resume: number): { handle: number; resumed: boolean };
  take(h: number, maxBytes: number): Buffer;
  stats(h: number): CaptureStats;
  flip(h: number): number;
  bitmap(h: number, which: number): Buffer;
  clearBits(h: number, which: number, bits: Buffer): void;
  calibrate(h: number, obj: string, device: string, sector: number, deviceStart: number): { pageOffsetBase: string; vmemmapBase: string };
  mark(h: number, obj: string, token: number): boolean;
  close(h: number, detach: number, pinDir: string): void;
}

export interface CaptureOptions {
  /** bpffs directory whose pins keep the capture running while the agent is down. */
  pinDir: string;
  /** The whole disk (major, minor) and this volume's bytes on it. */
  major: number;
  minor: number;
  startByte: number;
  endByte: number;
  /** Where devicePath starts on the disk: a partition's first byte (0, the default, for a whole disk). */
  deviceStartByte?: number;
  /** Bytes per bit of the write and drop bitmaps: 1 << chunkShift. */
  chunkShift: number;
  /** Kernel ring size: a power of two, at least 64 KiB. */
  ringBytes: number;
  /** Bound on records the reader holds for Node; past it records are dropped (and re-read later). */
  maxQueueBytes: number;
  /** SCHED_FIFO priority for the reader thread (0: ordinary scheduling). */
  fifoPriority: number;
  /** Reuse the pins of an earlier run when they are there. */
  resume: boolean;
}

const FALLBACK = 'use tracker "blocktrace" (where-written tracking, re-read from a capture) for this volume';

function root(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'native', 'binding.gyp'))) return dir;
    if (path.dirname(dir) === dir) throw tmError('TM_ERR_NATIVE', `no native/binding.gyp above ${here}`, { path: here });
  }
}

export function objectPath(): string {
  return path.join(root(), 'native', 'build', 'bpf', 'datacap.bpf.o');
}

function unsupported(why: string, extra: Record<string, unknown> = {}, cause?: unknown): Error {
  return tmError('TM_ERR_UNSUPPORTED', `data mode cannot run here: ${why}; ${FALLBACK}`, extra, cause);
}

/** Why this host cannot run data mode, or null. Checked before anything is loaded. */
export function dataModeUnavailable(): string | null {
  if (process.platform !== 'linux') return `it needs Linux (this is ${process.platform})`;
  if (process.arch !== 'x64') return `it reads pages through the x86-64 direct map (this is ${process.arch})`;
  if (process.getuid?.() !== 0) return 'it needs root (loading BPF programs, reading page frame numbers)';
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) return 'the kernel has no BTF (/sys/kernel/btf/vmlinux)';
  try {
    const lockdown = fs.readFileSync('/sys/kernel/security/lockdown', 'utf8');
    if (lockdown.includes('[confidentiality]')) return 'kernel lockdown (confidentiality) forbids BPF reads of kernel memory';
  } catch {
    // no lockdown LSM: nothing forbids it
  }
  if (!fs.existsSync(objectPath())) return `the BPF object ${objectPath()} was not built (clang, bpftool and libbpf-dev were missing at \`npm ci\`; install them and run \`npm run build:bpf\`)`;
  return null;
}

let addon: Addon | undefined;

function load(): Addon {
  if (addon) return addon;
  const file = path.join(root(), 'native', 'build', 'Release', 'tidemark_datacap.node');
  let a: Partial<Addon>;
  try {
    a = createRequire(import.meta.url)(file) as Partial<Addon>;
  } catch (e) {
    throw unsupported(`its addon ${file} does not load (${(e as Error).message}; is libbpf installed?)`, { path: file }, e);
  }
  if (typeof a.open !== 'function') throw unsupported('the addon was built without libbpf-dev (install it and run `npm run build:native`)', { path: file });
  addon = a as Addon;
  return addon;
}

/** bpffs where pins live; mounted at /sys/fs/bpf if nothing is. */
export function ensureBpffs(): string {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const bpf = mounts.find((m) => m[2] === 'bpf');
  if (bpf) return bpf[1]!;
  try {
    fs.mkdirSync('/sys/fs/bpf', { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf'], { stdio: 'pipe' });
  } catch (e) {
    throw unsupported(`no bpffs is mounted and mounting one at /sys/fs/bpf failed (${(e as Error).message.split('\n')[0]})`, {}, e);
  }
  return '/sys/fs/bpf';
}

const U32 = 2 ** 32;
/** The largest ring record: a header and a page of data (native/bpf/datacap.h DC_PIECE). */
const MAX_RECORD = DC_HDR + 4096;
/** Bytes of records copied out per native take (see takeRecords). */
export const TAKE_BYTES = 4 * 1024 * 1024;

/** Bytes before the headers in a buffer take() returned: u32 record count, u32 0. */
const TAKE_PREFIX = 8;

/**
 * The records in a buffer take() returned, in ring order: a count, the headers, then their data in the
 * same order (docs/FORMAT.md 9.6), so the pieces of one request lie side by side (toExtents joins them
 * by a view). Read through a DataView, 64-bit fields as two halves (no BigInt per record).
 */
export function parseRecords(buf: Buffer): DataRecord[] {
  const out: DataRecord[] = [];
  if (buf.length === 0) return out;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = buf.length >= TAKE_PREFIX ? v.getUint32(0, true) : 0;
  const headersEnd = TAKE_PREFIX + n * DC_HDR;
  if (n === 0 || headersEnd > buf.length) throw tmError('TM_ERR_NATIVE', `data-mode take of ${buf.length} bytes declares ${n} records`);
  let data = headersEnd;
  for (let at = TAKE_PREFIX; at < headersEnd; at += DC_HDR) {
    const flags = v.getUint16(at + 20, true);
    const length = v.getUint32(at + 16, true);
    const dataLen = flags & DC_WRITE ? length : 0;
    if (data + dataLen > buf.length) throw tmError('TM_ERR_NATIVE', `data-mode record ${(at - TAKE_PREFIX) / DC_HDR} runs past its buffer (${buf.length} bytes)`);
    out.push({
      seq: v.getUint32(at, true) + v.getUint32(at + 4, true) * U32,
      offset: v.getUint32(at + 8, true) + v.getUint32(at + 12, true) * U32,
      length,
      flags,
      epoch: v.getUint16(at + 22, true),
      piece: v.getUint32(at + 24, true),
      data: flags & DC_WRITE ? buf.subarray(data, data + dataLen) : null,
      crc: flags & DC_CRC ? v.getUint32(at + 28, true) : null,
    });
    data += dataLen;
  }
  if (data !== buf.length) throw tmError('TM_ERR_NATIVE', `data-mode take of ${buf.length} bytes holds ${data} bytes of records`);
  return out;
}

/** One volume's capture: attached (or re-opened from its pins) and calibrated. */
export class DataCapture {
  private closed = false;

  private constructor(private readonly a: Addon, private readonly h: number, readonly resumed: boolean, readonly pinDir: string) {}

  static open(devicePath: string, o: CaptureOptions): DataCapture {
    const why = dataModeUnavailable();
    if (why) throw unsupported(why);
    if (o.ringBytes < 65536 || (o.ringBytes & (o.ringBytes - 1)) !== 0) throw tmError('TM_ERR_CONFIG_INVALID', `data-mode ring of ${o.ringBytes} bytes: it must be a power of two of at least 64 KiB`);
    const a = load();
    let opened: { handle: number; resumed: boolean };
    try {
      opened = a.open(objectPath(), o.pinDir, o.major, o.minor, o.startByte, o.endByte, o.chunkShift, o.ringBytes, o.maxQueueBytes, o.fifoPriority, o.resume ? 1 : 0);
    } catch (e) {
      const { syscall, message } = e as { syscall?: string; message?: string };
      throw unsupported(message ?? String(e), { syscall }, e);
    }
    const cap = new DataCapture(a, opened.handle, opened.resumed, o.pinDir);
    if (!opened.resumed || cap.stats().calibrated === 0) {
      try {
        // A sector inside the volume: the calibration read must be one of this disk's requests.
        const sector = Math.floor(o.startByte / 512) + 8 * Math.floor(Math.random() * Math.max(1, Math.floor((o.endByte - o.startByte) / 4096)));
        // The programs see disk sectors; a partition's own offsets start at its first (o.deviceStartByte).
        a.calibrate(opened.handle, objectPath(), devicePath, Math.min(sector, Math.floor(o.endByte / 512) - 8), Math.floor((o.deviceStartByte ?? 0) / 512));
      } catch (e) {
        cap.close(true);
        const { syscall, message } = e as { syscall?: string; message?: string };
        throw unsupported(`calibration failed: ${message ?? String(e)}`, { syscall }, e);
      }
    }
    return cap;
  }

  /** Records queued so far, whole, up to about maxBytes (at least one when any is queued), as one buffer. */
  take(maxBytes: number): Buffer {
    return this.a.take(this.h, maxBytes);
  }

  /**
   * Records queued so far, parsed, up to about maxBytes, taken TAKE_BYTES at a time: buffers that size
   * are reused from the C heap, while one of tens of MiB is mapped fresh for every take, and on this
   * hypervisor each fresh page costs ~14 us (a 32 MiB take cost 110 ms of CPU; 4 MiB ones 0.3-0.5 ms).
   */
  takeRecords(maxBytes: number): DataRecord[] {
    const out: DataRecord[] = [];
    // After the first take (which returns a record even past maxBytes), only while a whole record fits.
    for (let got = 0; got === 0 || maxBytes - got >= MAX_RECORD; ) {
      const buf = this.a.take(this.h, Math.min(TAKE_BYTES, Math.max(1, maxBytes - got)));
      if (buf.length === 0) break;
      for (const r of parseRecords(buf)) out.push(r);
      got += buf.length - TAKE_PREFIX;
    }
    return out;
  }

  stats(): CaptureStats {
    return this.a.stats(this.h);
  }

  /** Start a new epoch: empties the bitmap of the one before the current. Returns the new epoch. */
  flip(): number {
    return this.a.flip(this.h);
  }

  bitmap(which: number): Buffer {
    return this.a.bitmap(this.h, which);
  }

  clearBits(which: number, bits: Buffer): void {
    this.a.clearBits(this.h, which, bits);
  }

  /**
   * Put a marker with this token (< 2^53) in the stream: every record reserved before the call comes
   * before it. False when the ring is full (try again later).
   */
  mark(token: number): boolean {
    return this.a.mark(this.h, objectPath(), token);
  }

  /** detach: unpin, so the program stops; otherwise it goes on capturing for the next open(). */
  close(detach: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.a.close(this.h, detach ? 1 : 0, this.pinDir);
  }
}
