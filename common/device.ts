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
