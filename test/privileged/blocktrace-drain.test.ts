// A blocktrace drain that fails part-way (here: ENOSPC when the dirty map is saved) must not leave the
// per-CPU counters ahead of the kernel: the next drain would take the unconsumed events for ones
// "consumed without being recorded" and resync the whole volume (issue 11 item 4). The events are read
// again, nothing is lost, and the blocks collected equal what was written.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { tmError } from '../../common/errors.js';
import { silentLogger } from '../../common/log.js';
import { BlockTraceTracker } from '../../agent/trackers/blocktrace.js';
import { DirtyMap } from '../../agent/trackers/dirty-map.js';
import { TraceInstance, tracefsRoot } from '../../agent/trackers/tracefs.js';
import { Volume } from '../../agent/volume.js';
import { attachLoop, makeImage, privileged, tempDir } from './require-root.js';

const BS = 4096;
const SIZE = 16 << 20;

t.test('a save that fails mid-drain leaves the counters where the saved map is: no false tracking loss', async (t) => {
  if (!privileged(t)) return;
  const dev = attachLoop(t, makeImage(t, SIZE >> 20));
  const dir = path.join(tempDir(t), `drainfault${randomBytes(3).toString('hex')}`);
  fs.mkdirSync(dir);
  const root = await tracefsRoot();
  t.teardown(async () => {
    for (const inst of await TraceInstance.stale(root, `tidemark.${path.basename(dir)}.`, '')) await inst.remove();
  });

  const losses: string[] = [];
  let failSaves = 0;
  const tracker = new BlockTraceTracker(dir, dev, SIZE, BS, silentLogger(), {
    bufferKiB: 1024,
    drainIntervalMs: 3_600_000, // drained only when the test says so
    onLost: async (reason) => { losses.push(reason); },
    saveMap: async (file, map: DirtyMap, meta) => {
      if (failSaves > 0) {
        failSaves--;
        throw tmError('TM_ERR_DISK_FULL', `save ${file}: ENOSPC (injected)`);
      }
      await map.save(file, BS, SIZE, meta);
    },
  });
  t.teardown(() => tracker.close());
  t.equal(await tracker.open(), 'no tracking baseline', 'a new volume starts from a resync');
  losses.length = 0;
  await tracker.drain();

  // Writes the kernel reports, then a drain whose save fails.
  const blocks = [3, 4, 5, 700, 1501, 3000];
  const written = new Map<number, Buffer>();
  const fh = await fs.promises.open(dev, 'r+');
  for (const b of blocks) {
    const data = randomBytes(BS);
    written.set(b, data);
    await fh.write(data, 0, BS, b * BS);
  }
  await fh.sync(); // the writes reach the device: their completions are in the kernel's buffer
  await fh.close();
  failSaves = 1;
  await t.rejects(tracker.drain(), { code: 'TM_ERR_DISK_FULL' }, 'the drain fails at the save');
  t.same(losses, [], 'no loss declared by the failed drain');

  const events = await tracker.drain();
  t.ok(events > 0, `the next drain reads the unconsumed events again (${events})`);
  t.same(losses, [], 'and finds nothing lost: the counters stayed with the saved map');
  await tracker.drain();
  t.same(losses, [], 'nor does the one after');

  // The blocks are dirty and read back as written.
  const vol = await Volume.open(dev);
  t.teardown(() => vol.close());
  const col = await tracker.collect(vol, SIZE);
  const got = new Map<number, Buffer>();
  for (const e of col.extents) for (let o = 0; o < e.length; o += BS) got.set((e.offset + o) / BS, e.data.subarray(o, o + BS));
  for (const b of blocks) t.ok(got.get(b)?.equals(written.get(b)!), `block ${b} collected with the bytes written`);
  await col.commit();
});
