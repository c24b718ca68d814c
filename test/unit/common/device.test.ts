// A block device is found in sysfs by its device number (common/device.ts), so a node with any name works
// (a container's own /dev, mknod): the split must be glibc's major()/minor() (values from Python's os.makedev).
import t from 'tap';
import { splitDev } from '../../../common/device.js';

t.test('dev_t splits as glibc splits it', async (t) => {
  t.same(splitDev(2049), { major: 8, minor: 1 }, 'sda1');
  t.same(splitDev(1114924), { major: 259, minor: 300 }, 'a minor past 255 (nvme partitions)');
  t.same(splitDev(4294967295), { major: 4095, minor: 1048575 }, 'the largest of the old 32-bit encoding');
  t.same(splitDev(17592186044421), { major: 4096, minor: 5 }, 'a major past 4095');
});
