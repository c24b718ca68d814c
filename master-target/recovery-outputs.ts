// Where a recovery may write. Recovering onto the wrong place destroys data that is still needed: the
// live replica (replication then goes on against an unlinked inode), another volume's replica, the state
// folder, a source a running agent protects, or a mounted filesystem. So, whatever --force says:
//   - files only inside the configured `recovery.roots`; block devices only those in `recovery.devices`,
//     and only when the operator says --device;
//   - never a configured replica (by path or by inode: a hard link, another node of the same device), the
//     state folder or a snapshot folder, or anything inside them;
//   - never an image file a running Tidemark daemon holds (agents and master targets hold a shared flock
//     on their image files: agent/volume.ts, master-target/replica.ts), nor a device that is mounted or
//     held open exclusively (an O_EXCL open answers EBUSY).
import { constants, promises as fsp, type Stats } from 'node:fs';
import path from 'node:path';
import { resolveFrom } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { tryLock } from '../native/index.js';
import type { MtConfig } from './config.js';

export interface OutputPolicy {
  roots: string[];
  devices: string[];
  /** Paths nothing may be recovered onto; `tree`: nor anything inside. */
  guarded: Array<{ path: string; tree: boolean; what: string }>;
}

export function outputPolicy(cfg: MtConfig): OutputPolicy {
  const p = (x: string): string => resolveFrom(cfg.configDir, x);
  return {
    roots: cfg.recovery.roots.map(p),
    devices: cfg.recovery.devices.map(p),
    guarded: [
      { path: p(cfg.stateDir), tree: true, what: 'the master target\'s state folder' },
      ...cfg.volumes.map((v) => ({ path: p(v.replica), tree: false, what: `the replica of ${v.id}` })),
      ...cfg.volumes.flatMap((v) => (v.snapshots ? [{ path: p(v.snapshots.dir), tree: true, what: `the snapshot folder of ${v.id}` }] : [])),
    ],
  };
}

const statOrNull = (p: string): Promise<Stats | null> => fsp.stat(p).catch(() => null);

/** The real path of `p`, resolving symlinks as far as the path exists (a new output does not yet). */
async function realish(p: string): Promise<string> {
  const abs = path.resolve(p);
  const real = await fsp.realpath(abs).catch(() => null);
  if (real !== null) return real;
  const parent = path.dirname(abs);
  return parent === abs ? abs : path.join(await realish(parent), path.basename(abs));
}

const inside = (p: string, dir: string): boolean => p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);

/** Same file or same device: one inode, or one device number whatever node names it. */
function same(a: Stats, b: Stats): boolean {
  if (a.isBlockDevice() && b.isBlockDevice()) return a.rdev === b.rdev;
  return a.dev === b.dev && a.ino === b.ino;
}

export interface OutputIntent {
  /** The operator said the output is a block device (--device). */
  device?: boolean;
}

/** Refuse `out` unless the policy allows writing it (see the top of this file). */
export async function checkOutput(policy: OutputPolicy, out: string, intent: OutputIntent = {}): Promise<void> {
  const refuse = (why: string): never => { throw tmError('TM_ERR_OUTPUT_REFUSED', `refusing to recover onto ${out}: ${why}; nothing was written`, { path: out }); };
  if (!path.isAbsolute(out)) throw tmError('TM_ERR_USAGE', `the output ${out} must be an absolute path`, { path: out });
  const real = await realish(out);
  const st = await statOrNull(real);
  for (const g of policy.guarded) {
    const gReal = await realish(g.path);
    if (real === gReal || (g.tree && inside(real, gReal))) refuse(`it is ${g.tree && real !== gReal ? 'inside ' : ''}${g.what} (${g.path})`);
    const gst = st ? await statOrNull(gReal) : null;
    if (st && gst && same(st, gst)) refuse(`it is ${g.what} (${g.path}) under another name`);
  }
  if (st?.isBlockDevice()) {
    if (!intent.device) throw tmError('TM_ERR_USAGE', `${out} is a block device: say so with --device (it must also be listed in the master target's recovery.devices)`, { path: out });
    let listed = false;
    for (const d of policy.devices) {
      const dst = await statOrNull(d);
      if (dst && same(st, dst)) listed = true;
    }
    if (!listed) refuse(`block device not listed in the master target's recovery.devices (${policy.devices.join(', ') || 'none configured'})`);
    const fh = await fsp.open(real, constants.O_RDONLY | constants.O_EXCL | constants.O_NONBLOCK).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'EBUSY') refuse('the device is in use (mounted, or held by LVM, RAID or another program); unmount it first');
      throw e;
    });
    await fh.close();
    return;
  }
  if (intent.device) throw tmError('TM_ERR_USAGE', `--device was given but ${out} is ${st ? 'not a block device' : 'missing'}`, { path: out });
  if (st && !st.isFile()) throw tmError('TM_ERR_USAGE', `${out} is neither a file nor a block device`, { path: out });
  const roots = await Promise.all(policy.roots.map(realish));
  if (!roots.some((r) => inside(real, r))) {
    refuse(roots.length ? `it is not inside a recovery root (${policy.roots.join(', ')})` : 'no recovery.roots are configured in the master target config (name the folders recoveries may be written to)');
  }
  if (st) {
    // A running agent or master target holds a shared lock on its image files.
    const fh = await fsp.open(real, 'r');
    try {
      if (!tryLock(fh.fd, true)) refuse('a running Tidemark daemon holds it (a protected source or a replica)');
    } finally {
      await fh.close();
    }
  }
}
