// Test failover: a writable copy of a retained point (or the latest) for a rehearsal, while replication
// and retention go on untouched. The copy is a recovered image (a reflink clone where possible: it costs
// the space of what the rehearsal writes), optionally attached to a loop device so a VM or a mount can
// use it as a disk. One rehearsal per volume; `cleanup` detaches and deletes it in one step.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDir, writeFileDurable } from '../common/durable.js';
import { volumeIdSchema } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { recoverPoint, type PointSelector, type RecoverResult, type RecoverySource } from './recover.js';

const run = promisify(execFile);

export interface Rehearsal {
  volume: string;
  image: string;
  device: string | null;
  startedAt: number;
  recovered: RecoverResult;
}

export class TestFailovers {
  constructor(private readonly dir: string) {}

  private recordOf(volume: string): string {
    // Callers check the id against the configuration; this keeps a path out of it whatever they do.
    if (!volumeIdSchema.safeParse(volume).success) throw tmError('TM_ERR_UNKNOWN_VOLUME', 'not a volume id', { volume: volume.slice(0, 64) });
    return path.join(this.dir, `${volume}.json`);
  }

  async get(volume: string): Promise<Rehearsal | null> {
    const raw = await fsp.readFile(this.recordOf(volume), 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(e)));
    if (raw === null) return null;
    try {
      return JSON.parse(raw) as Rehearsal;
    } catch {
      // The parser's message quotes the file's first bytes: never repeat them.
      throw tmError('TM_ERR_STATE_CORRUPT', `test failover record ${this.recordOf(volume)} is not valid JSON`, { volume });
    }
  }

  async list(): Promise<Rehearsal[]> {
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    const out: Rehearsal[] = [];
    for (const n of names.filter((x) => x.endsWith('.json'))) {
      const r = await this.get(n.slice(0, -5));
      if (r) out.push(r);
    }
    return out;
  }

  async start(src: RecoverySource, select: PointSelector, opts: { loop?: boolean } = {}): Promise<Rehearsal> {
    const existing = await this.get(src.volumeId);
    if (existing) {
      throw tmError('TM_ERR_USAGE', `a test failover of ${src.volumeId} is already running (point #${existing.recovered.point.seq}, ${existing.device ?? existing.image}); clean it up first: tidemark test-failover cleanup ${src.volumeId}`, { volume: src.volumeId });
    }
    await ensureDir(this.dir);
    const image = path.join(this.dir, `${src.volumeId}.img`);
    await fsp.rm(image, { force: true }); // left by a start that failed before its record was written
    const recovered = await recoverPoint(src, { select, out: image });
    let device: string | null = null;
    if (opts.loop) {
      try {
        device = (await run('losetup', ['--find', '--show', image])).stdout.trim();
      } catch (e) {
        await fsp.rm(image, { force: true });
        throw tmError('TM_ERR_IO', `attach ${image} to a loop device: ${(e as Error).message.trim()}`, { volume: src.volumeId });
      }
    }
    const r: Rehearsal = { volume: src.volumeId, image, device, startedAt: Date.now(), recovered };
    await writeFileDurable(this.recordOf(src.volumeId), JSON.stringify(r));
    return r;
  }

  /** Detach and delete the rehearsal copy; what it wrote is gone, the replica never saw it. */
  async cleanup(volume: string): Promise<Rehearsal> {
    const r = await this.get(volume);
    if (!r) throw tmError('TM_ERR_USAGE', `no test failover of ${volume} is running`, { volume });
    if (r.device) {
      await run('losetup', ['-d', r.device]).catch((e: Error) => {
        if (!/No such device|not a block device|failed to use device/i.test(e.message)) throw tmError('TM_ERR_IO', `detach ${r.device}: ${e.message.trim()} (is it still mounted?)`, { volume });
      });
    }
    await fsp.rm(r.image, { force: true });
    await fsp.rm(this.recordOf(volume), { force: true });
    return r;
  }
}
