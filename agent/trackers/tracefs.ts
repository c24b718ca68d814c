// An agent-owned tracefs instance: its own ring buffer in the kernel, its own event filter. Events stay
// in the kernel until read from trace_pipe, so they outlive an agent restart. Reading the instance's
// `trace` file does not consume (pause-on-trace is off, so it does not stop recording either), which lets
// the tracker make what it read durable before it consumes exactly those bytes from trace_pipe.
import { execFile } from 'node:child_process';
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tmError } from '../../common/errors.js';

const TRACEFS = '/sys/kernel/tracing';
const EVENT = 'events/block/block_rq_complete';

export interface CpuStats {
  entries: number;
  overrun: number;
  dropped: number;
  read: number;
}

export interface InstanceConfig {
  filter: string;
  bufferKiB: number;
}

/** Mount tracefs if it is not mounted yet; returns its root. */
export async function tracefsRoot(): Promise<string> {
  const ok = () => fsp.access(path.join(TRACEFS, 'instances')).then(() => true, () => false);
  if (await ok()) return TRACEFS;
  await promisify(execFile)('mount', ['-t', 'tracefs', 'tracefs', TRACEFS]).catch((e: Error) => {
    throw tmError('TM_ERR_UNSUPPORTED', `cannot mount tracefs at ${TRACEFS} (${e.message.trim()}); blocktrace needs root and a kernel with tracing: use tracker "scan"`);
  });
  if (!(await ok())) throw tmError('TM_ERR_UNSUPPORTED', `${TRACEFS} has no instances/: this kernel cannot give the agent its own trace buffer; use tracker "scan"`);
  return TRACEFS;
}

export async function bootId(): Promise<string> {
  return (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
}

export class TraceInstance {
  readonly dir: string;

  constructor(root: string, readonly name: string) {
    this.dir = path.join(root, 'instances', name);
  }

  private read(rel: string): Promise<string> {
    return fsp.readFile(path.join(this.dir, rel), 'utf8');
  }

  private write(rel: string, value: string): Promise<void> {
    return fsp.writeFile(path.join(this.dir, rel), value);
  }

  exists(): Promise<boolean> {
    return fsp.access(this.dir).then(() => true, () => false);
  }

  /** Make the instance and start recording completed non-read requests that pass the filter. Returns the
   * buffer size the kernel actually gave (it rounds up to whole sub-buffers). */
  async create(cfg: InstanceConfig): Promise<number> {
    await fsp.mkdir(this.dir);
    await this.write('tracing_on', '0');
    await this.write('options/context-info', '0'); // lines without task, CPU and time: less to format and parse
    await this.write('options/overwrite', '1'); // when full, drop the oldest and count them as overrun
    await this.write('options/pause-on-trace', '0'); // reading `trace` must not stop recording
    await this.write('buffer_size_kb', String(cfg.bufferKiB));
    await this.write(`${EVENT}/filter`, cfg.filter);
    await this.write(`${EVENT}/enable`, '1');
    await this.write('tracing_on', '1');
    return Number((await this.read('buffer_size_kb')).trim());
  }

  /** What differs from the configuration the instance was made with (bufferKiB: as the kernel gave it),
   * or null: anything off means events may have been lost. */
  async check(cfg: InstanceConfig): Promise<string | null> {
    if ((await this.read('tracing_on')).trim() !== '1') return 'tracing was switched off in the instance';
    if ((await this.read(`${EVENT}/enable`)).trim() !== '1') return 'block_rq_complete was disabled in the instance';
    if ((await this.read(`${EVENT}/filter`)).trim() !== cfg.filter) return 'the instance filter was changed';
    if ((await this.read('options/overwrite')).trim() !== '1' || (await this.read('options/context-info')).trim() !== '0') return 'the instance options were changed';
    const size = (await this.read('buffer_size_kb')).trim();
    if (size !== String(cfg.bufferKiB)) return `the instance buffer was resized (${size} KiB, was ${cfg.bufferKiB})`;
    return null;
  }

  async cpus(): Promise<number[]> {
    const names = await fsp.readdir(path.join(this.dir, 'per_cpu'));
    return names.filter((n) => /^cpu\d+$/.test(n)).map((n) => Number(n.slice(3))).sort((a, b) => a - b);
  }

  async stats(cpu: number): Promise<CpuStats> {
    const text = await this.read(`per_cpu/cpu${cpu}/stats`);
    const field = (name: string): number => {
      const m = new RegExp(`^${name}: (\\d+)`, 'm').exec(text);
      if (!m) throw tmError('TM_ERR_UNSUPPORTED', `per_cpu/cpu${cpu}/stats has no "${name}" field; this kernel's tracefs is not one blocktrace knows`);
      return Number(m[1]);
    };
    return { entries: field('entries'), overrun: field('overrun'), dropped: field('dropped events'), read: field('read events') };
  }

  /** The events now in one CPU's buffer, without consuming them: whole lines, header removed. */
  async peek(cpu: number): Promise<string> {
    const text = await this.read(`per_cpu/cpu${cpu}/trace`);
    // The header is a block of '#' lines; events follow.
    let pos = 0;
    while (pos < text.length && text.charCodeAt(pos) === 35) {
      const eol = text.indexOf('\n', pos);
      pos = eol < 0 ? text.length : eol + 1;
    }
    return text.slice(pos);
  }

  /**
   * Consume exactly the bytes of `expected` from the CPU's trace_pipe (the kernel consumes whole events
   * until it has printed that many bytes) and return what was consumed.
   */
  async consume(cpu: number, expected: string): Promise<string> {
    const want = Buffer.byteLength(expected);
    const buf = Buffer.allocUnsafe(want);
    const fh = await fsp.open(path.join(this.dir, `per_cpu/cpu${cpu}/trace_pipe`), constants.O_RDONLY | constants.O_NONBLOCK);
    let got = 0;
    try {
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, null).catch((e: NodeJS.ErrnoException) => {
          if (e.code === 'EAGAIN') return { bytesRead: 0 };
          throw e;
        });
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } finally {
      await fh.close();
    }
    return buf.subarray(0, got).toString('utf8');
  }

  /** Remove the instance (its buffer and every event in it). */
  async remove(): Promise<void> {
    await fsp.rmdir(this.dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  /** Instances an earlier agent made for this volume (`<prefix><8 hex>`), other than `keep`. */
  static async stale(root: string, prefix: string, keep: string): Promise<TraceInstance[]> {
    const names = await fsp.readdir(path.join(root, 'instances'));
    // Exactly prefix + 8 hex digits: volume "db" must not take "db.logs"'s instance for its own.
    const mine = (n: string): boolean => n.startsWith(prefix) && /^[0-9a-f]{8}$/.test(n.slice(prefix.length));
    return names.filter((n) => mine(n) && n !== keep).map((n) => new TraceInstance(root, n));
  }
}
