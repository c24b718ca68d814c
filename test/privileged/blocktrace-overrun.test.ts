// An overrun that happens while a drain reads the kernel's buffer (between reading the events and
// consuming them) must be named as an overrun — the cause the operator can act on, by a bigger
// `blocktrace.bufferKiB` — not as someone else consuming the buffer (CI saw the tracking-loss test fail so).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { silentLogger } from '../../common/log.js';
import { BlockTraceTracker } from '../../agent/trackers/blocktrace.js';
import type { DirtyMap } from '../../agent/trackers/dirty-map.js';
import { TraceInstance, tracefsRoot } from '../../agent/trackers/tracefs.js';
import { attachLoop, makeImage, privileged, tempDir } from './require-root.js';

const BS = 4096;
const SIZE = 64 << 20;

t.test('an overrun during a drain is reported as an overrun', async (t) => {
  if (!privileged(t, ['fio'])) return;
  const dev = attachLoop(t, makeImage(t, SIZE >> 20));
  const dir = path.join(tempDir(t), `overrun${randomBytes(3).toString('hex')}`);
  fs.mkdirSync(dir);
  const root = await tracefsRoot();
  t.teardown(async () => {
    for (const inst of await TraceInstance.stale(root, `tidemark.${path.basename(dir)}.`, '')) await inst.remove();
  });

  const losses: string[] = [];
  let burst = false;
  const tracker = new BlockTraceTracker(dir, dev, SIZE, BS, silentLogger(), {
    bufferKiB: 4,
    drainIntervalMs: 3_600_000, // drained only when the test says so
    onLost: async (reason) => { losses.push(reason); },
    saveMap: async (file, map: DirtyMap, meta) => {
      await map.save(file, BS, SIZE, meta);
      // Saved, not yet consumed: thousands of scattered completions on every CPU overrun the buffer now.
      if (burst) {
        burst = false;
        execFileSync('fio', ['--name=burst', `--filename=${dev}`, '--size=32m', '--bs=4k', '--rw=randwrite', '--ioengine=psync', '--direct=1', '--numjobs=2', '--output=/dev/null']);
      }
    },
  });
  t.teardown(() => tracker.close());
  await tracker.open();
  await tracker.drain();
  losses.length = 0;

  // A few writes so the drain has events to read, then the burst while it holds them.
  const fh = await fs.promises.open(dev, 'r+');
  for (const b of [1, 9, 17, 33]) await fh.write(randomBytes(BS), 0, BS, b * BS);
  await fh.sync();
  await fh.close();
  burst = true;
  await tracker.drain();
  await tracker.drain();
  t.ok(losses.length > 0, `the loss was detected (${losses.join('; ')})`);
  t.ok(losses.every((r) => /overran/.test(r)), `and every reason names the overrun: ${JSON.stringify(losses)}`);
});
