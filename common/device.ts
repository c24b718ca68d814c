// Facts about files and block devices that Node's stat does not give directly.
import { promises as fsp } from 'node:fs';
import path from 'node:path';

/** Size of a file or block device. Block devices report size 0 to stat, so ask sysfs. */
export async function volumeSize(p: string): Promise<number> {
  const st = await fsp.stat(p);
  if (!st.isBlockDevice()) return st.size;
  const name = path.basename(await fsp.realpath(p));
  const sectors = await fsp.readFile(`/sys/class/block/${name}/size`, 'utf8');
  return Number(sectors.trim()) * 512;
}

/** Where a block device's requests show up in the kernel's block tracepoints. */
export interface BlockDeviceInfo {
  /** Kernel name: loop3, sda1, nvme0n1p2. */
  name: string;
  /** The whole disk's dev_t as the tracepoints record it: major << 20 | minor. */
  diskDevT: number;
  diskName: string;
  /** First and past-the-end 512-byte sector of this device on its disk (0.. for a whole disk). */
  startSector: number;
  endSector: number;
  /** Request-based (blk-mq): the disk completes requests, which block_rq_complete reports. */
  requestBased: boolean;
}

const readSys = async (p: string): Promise<string> => (await fsp.readFile(p, 'utf8')).trim();

/** glibc's major()/minor() of a dev_t. */
export function splitDev(dev: number): { major: number; minor: number } {
  const d = BigInt(dev);
  return { major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)), minor: Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n)) };
}

export async function blockDeviceInfo(p: string): Promise<BlockDeviceInfo | null> {
  const st = await fsp.stat(p);
  if (!st.isBlockDevice()) return null;
  // By device number, not by name: a node made elsewhere (mknod, a container's /dev) names no sysfs entry.
  const { major: devMajor, minor: devMinor } = splitDev(st.rdev);
  const sys = await fsp.realpath(`/sys/dev/block/${devMajor}:${devMinor}`);
  const name = path.basename(sys);
  const isPartition = await fsp.access(path.join(sys, 'partition')).then(() => true, () => false);
  const diskSys = isPartition ? path.dirname(sys) : sys;
  const [major, minor] = (await readSys(path.join(diskSys, 'dev'))).split(':').map(Number) as [number, number];
  const start = isPartition ? Number(await readSys(path.join(sys, 'start'))) : 0;
  const sectors = Number(await readSys(path.join(sys, 'size')));
  const requestBased = await fsp.access(path.join(diskSys, 'mq')).then(() => true, () => false);
  return { name, diskDevT: major * 2 ** 20 + minor, diskName: path.basename(diskSys), startSector: start, endSector: start + sectors, requestBased };
}
