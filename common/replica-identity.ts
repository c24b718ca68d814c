// Which file or device the master target writes as a volume's replica. A replica replaced under its path
// (a restore, `mv`, `cp --remove-destination`) is another file: the open descriptor would keep writing the
// old inode, and the hash table would describe content the path no longer holds. The identity is recorded
// with the volume's state (docs/FORMAT.md §5) and compared at attach, before each differential is
// acknowledged, and on a timer (docs/OPERATIONS.md "Replica replaced").
import type { BigIntStats } from 'node:fs';

export interface ReplicaIdentity {
  kind: 'file' | 'device';
  /** st_dev and st_ino of an image file (decimal strings: they pass 2^53). */
  dev: string;
  ino: string;
  /**
   * Birth time in ns (statx btime), "0" where the filesystem keeps none. A file created where one was
   * deleted may be given the same inode number; its birth time still tells it apart.
   */
  birthNs: string;
  /** st_rdev of a block device: which device the node names. */
  rdev: string;
  /** Bytes: st_size of a file, the device's size. */
  size: number;
}

export function identityOf(st: BigIntStats, size: number): ReplicaIdentity {
  const device = st.isBlockDevice();
  return {
    kind: device ? 'device' : 'file',
    dev: device ? '0' : String(st.dev),
    ino: device ? '0' : String(st.ino),
    birthNs: device ? '0' : String(st.birthtimeNs),
    rdev: device ? String(st.rdev) : '0',
    size,
  };
}

/** Null when `now` is the replica `was`; else what differs, for the alert. */
export function replacedHow(was: ReplicaIdentity, now: ReplicaIdentity): string | null {
  if (was.kind !== now.kind) return `was a${was.kind === 'file' ? 'n image file' : ' block device'}, now a${now.kind === 'file' ? 'n image file' : ' block device'}`;
  if (now.kind === 'device') {
    if (was.rdev !== now.rdev) return `device number ${was.rdev} is now ${now.rdev}`;
  } else {
    if (was.dev !== now.dev || was.ino !== now.ino) return `inode ${was.dev}:${was.ino} is now ${now.dev}:${now.ino}`;
    // Only where both were recorded: a filesystem without birth times reports 0.
    if (was.birthNs !== '0' && now.birthNs !== '0' && was.birthNs !== now.birthNs) return `inode ${now.ino} was created anew (birth time ${was.birthNs} is now ${now.birthNs})`;
  }
  if (was.size !== now.size) return `size ${was.size} is now ${now.size}`;
  return null;
}
