// The master target's space watch: every filesystem it writes to (its state directory with staging and
// retention logs, each file replica's directory, each snapshot directory) measured with statfs on a
// timer, so a filling disk is reported before a write fails and whether or not anything arrives to be
// written. Transitions are logged once per filesystem (warn, error with TM_ERR_DISK_FULL, info when
// space is back); the status snapshot and /metrics read the last measurement.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import { mib } from '../common/units.js';

export type SpaceHealth = 'ok' | 'warning' | 'critical';

export interface SpaceLimits {
  /** Below this % of the filesystem free: warning. */
  warningFreePercent: number;
  /** Below this % free: critical (the next staging, retention or replica write may fail). */
  criticalFreePercent: number;
}

/** A directory the master target writes to, and what it holds (for the operator reading the finding). */
export interface WatchedDir {
  dir: string;
  holds: string;
}

export interface FilesystemSpace {
  /** The first watched directory on this filesystem. */
  path: string;
  /** What the master target keeps there, e.g. `state (staging, retention)`, `replica of vol1`. */
  holds: string[];
  sizeBytes: number;
  availBytes: number;
  /** Of the filesystem's size, available to us; 0.1 steps. */
  freePercent: number;
  health: SpaceHealth;
}

export interface SpaceStatus {
  /** The worst of the filesystems'. */
  health: SpaceHealth;
  /** One sentence per filesystem that is not ok. */
  reasons: string[];
  filesystems: FilesystemSpace[];
  /** Watched directories that could not be measured at the last check, each with why. */
  errors: string[];
}

const RANK: Record<SpaceHealth, number> = { ok: 0, warning: 1, critical: 2 };

/** The level for a measurement; pure, so tested and documented in one place. */
export function spaceHealth(limits: SpaceLimits, sizeBytes: number, availBytes: number): { freePercent: number; health: SpaceHealth } {
  const freePercent = sizeBytes > 0 ? Math.floor((1000 * Math.max(0, availBytes)) / sizeBytes) / 10 : 0;
  const health = freePercent < limits.criticalFreePercent ? 'critical' : freePercent < limits.warningFreePercent ? 'warning' : 'ok';
  return { freePercent, health };
}

export function describe(f: FilesystemSpace, limits: SpaceLimits): string {
  return `${f.path} (${f.holds.join(', ')}): ${f.freePercent.toFixed(1)}% free, ${mib(f.availBytes)} of ${mib(f.sizeBytes)} (warning below ${limits.warningFreePercent}%, critical below ${limits.criticalFreePercent}%)`;
}

export class SpaceWatch {
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;
  /** Last logged level per filesystem path: a transition is logged once. */
  private readonly logged = new Map<number, SpaceHealth>();
  /** Last logged measuring error per directory ('' once it measures again). */
  private readonly failing = new Map<string, string>();
  private current: SpaceStatus = { health: 'ok', reasons: [], filesystems: [], errors: [] };

  constructor(
    private readonly dirs: WatchedDir[],
    private readonly limits: SpaceLimits,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  /** Never fails or waits on a filesystem: a watch that cannot measure must not keep the daemon from starting. */
  open(): void {
    const tick = (): void => {
      this.checking ??= this.check().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'filesystem space check failed')).finally(() => { this.checking = null; });
    };
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  /** Not waiting for a check in progress: it only reads (a hung network filesystem must not hold the stop). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  status(): SpaceStatus {
    return this.current;
  }

  /** Measure every watched filesystem once (directories on one filesystem are measured together). */
  async check(): Promise<void> {
    const byDev = new Map<number, FilesystemSpace>();
    const errors: string[] = [];
    for (const w of this.dirs) {
      try {
        // A directory not made yet (a replica created later): measure the nearest one that exists.
        const dir = await existingAncestor(w.dir);
        const st = await fsp.stat(dir);
        const seen = byDev.get(st.dev);
        if (seen) {
          if (!seen.holds.includes(w.holds)) seen.holds.push(w.holds);
        } else {
          const s = await fsp.statfs(dir);
          // A filesystem that reports no size (some pseudo filesystems) has no space to watch.
          if (s.blocks > 0) byDev.set(st.dev, { path: dir, holds: [w.holds], sizeBytes: s.blocks * s.bsize, availBytes: s.bavail * s.bsize, ...spaceHealth(this.limits, s.blocks * s.bsize, s.bavail * s.bsize) });
        }
        this.failed(w.dir, '');
      } catch (e) {
        // One directory that cannot be measured does not stop the others from being.
        const why = `${w.dir} (${w.holds}): ${(e as Error).message}`;
        errors.push(why);
        this.failed(w.dir, why);
      }
    }
    const filesystems = [...byDev.values()];
    const bad = filesystems.filter((f) => f.health !== 'ok');
    this.current = {
      health: filesystems.reduce<SpaceHealth>((h, f) => (RANK[f.health] > RANK[h] ? f.health : h), 'ok'),
      reasons: bad.map((f) => describe(f, this.limits)),
      filesystems,
      errors,
    };
    for (const [dev, f] of byDev) this.logTransition(dev, f);
  }

  /** A directory's measuring error, logged when it starts or changes, and when it clears. */
  private failed(dir: string, why: string): void {
    const before = this.failing.get(dir) ?? '';
    if (before === why) return;
    this.failing.set(dir, why);
    if (why) this.log.warn({ dir, err: why }, 'filesystem space cannot be measured');
    else this.log.info({ dir }, 'filesystem space measured again');
  }

  /** Keyed by device: the path shown may change (a watched folder made later), the filesystem does not. */
  private logTransition(dev: number, f: FilesystemSpace): void {
    const before = this.logged.get(dev) ?? 'ok';
    if (before === f.health) return;
    this.logged.set(dev, f.health);
    const fields = { path: f.path, holds: f.holds, freePercent: f.freePercent, availBytes: f.availBytes, sizeBytes: f.sizeBytes, reason: describe(f, this.limits) };
    if (f.health === 'critical') this.log.error({ ...fields, code: 'TM_ERR_DISK_FULL' }, 'filesystem nearly out of space: staging, retention or replica writes may fail');
    else if (f.health === 'warning') this.log.warn(fields, 'filesystem low on space');
    else this.log.info(fields, 'filesystem has space again');
  }
}

async function existingAncestor(dir: string): Promise<string> {
  let d = path.resolve(dir);
  for (;;) {
    if (await fsp.stat(d).then((s) => s.isDirectory(), () => false)) return d;
    const up = path.dirname(d);
    if (up === d) return d;
    d = up;
  }
}
