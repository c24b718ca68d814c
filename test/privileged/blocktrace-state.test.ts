// blocktrace when its own state cannot be trusted: an image file instead of a device, a damaged dirty map,
// its tracing instance removed while the agent was down or while it runs. Each is said (a code or a
// reason), answered with a resync through onLost, and tracking goes on with a fresh instance; a removal
// while running is a tracking loss logged with TM_ERR_TRACKING_LOST, as every other loss is.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { TidemarkError } from '../../common/errors.js';
import { BlockTraceTracker } from '../../agent/trackers/blocktrace.js';
import { TraceInstance, tracefsRoot } from '../../agent/trackers/tracefs.js';
import { attachLoop, makeImage, privileged, tempDir } from './require-root.js';

const BS = 4096;
const SIZE = 16 << 20;

interface Rig { dev: string; dir: string; root: string; prefix: string; losses: string[]; logs: Array<Record<string, unknown>>; tracker(): BlockTraceTracker; instances(): Promise<string[]> }

async function rig(t: Test): Promise<Rig> {
  const dev = attachLoop(t, makeImage(t, SIZE >> 20));
  const dir = path.join(tempDir(t), `btstate${randomBytes(3).toString('hex')}`);
  fs.mkdirSync(dir);
  const root = await tracefsRoot();
  const prefix = `tidemark.${path.basename(dir)}.`;
  t.teardown(async () => {
    for (const inst of await TraceInstance.stale(root, prefix, '')) await inst.remove();
  });
  const losses: string[] = [];
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  return {
    dev, dir, root, prefix, losses, logs,
    tracker: () => {
      const tr = new BlockTraceTracker(dir, dev, SIZE, BS, log, { bufferKiB: 1024, drainIntervalMs: 3_600_000, onLost: async (r) => { losses.push(r); } });
      t.teardown(() => tr.close());
      return tr;
    },
    instances: async () => (await TraceInstance.stale(root, prefix, '')).map((i) => i.name),
  };
}

t.test('an image file is refused with TM_ERR_UNSUPPORTED', async (t) => {
  if (!privileged(t)) return;
  const image = makeImage(t, 1);
  const tr = new BlockTraceTracker(tempDir(t), image, 1 << 20, BS, pino({ level: 'silent' }), { bufferKiB: 1024, drainIntervalMs: 3_600_000, onLost: async () => {} });
  const err = await tr.open().then(() => null, (e: unknown) => e as TidemarkError);
  t.equal(err?.code, 'TM_ERR_UNSUPPORTED');
  t.match(err?.message, /is a file .*use tracker "scan"/);
});

t.test('a damaged dirty map: the restart says so and resyncs, with a fresh instance', async (t) => {
  if (!privileged(t)) return;
  const r = await rig(t);
  const first = r.tracker();
  t.equal(await first.open(), 'no tracking baseline');
  await first.drain();
  await first.close();
  t.equal((await r.instances()).length, 1, 'one instance, left recording while the agent is down');
  const file = path.join(r.dir, 'dirty-map.bin');
  const bytes = fs.readFileSync(file);
  bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
  fs.writeFileSync(file, bytes);
  r.losses.length = 0;
  const again = r.tracker();
  const reason = await again.open();
  t.match(reason, /^dirty map unreadable/, `the reason says why (${reason})`);
  t.strictSame(r.losses, [reason], 'and the volume was marked for resync');
  t.equal((await r.instances()).length, 1, 'the old instance was replaced, not left beside the new one');
});

t.test('the instance removed while the agent was down: the restart says it is gone and resyncs', async (t) => {
  if (!privileged(t)) return;
  const r = await rig(t);
  const first = r.tracker();
  await first.open();
  await first.close();
  const [name] = await r.instances();
  await new TraceInstance(r.root, name!).remove();
  r.losses.length = 0;
  const reason = await r.tracker().open();
  t.equal(reason, `tracing instance ${name!} is gone`);
  t.strictSame(r.losses, [reason]);
  t.equal((await r.instances()).length, 1, 'tracking goes on with a new instance');
});

t.test('the instance removed while running: a tracking loss, logged with its code, then a fresh instance', async (t) => {
  if (!privileged(t)) return;
  const r = await rig(t);
  const tr = r.tracker();
  await tr.open();
  await tr.drain();
  const [name] = await r.instances();
  await new TraceInstance(r.root, name!).remove();
  r.losses.length = 0;
  await tr.drain();
  t.strictSame(r.losses, [`tracing instance ${name!} was removed`], 'the volume was marked for resync');
  const lost = r.logs.find((l) => l.code === 'TM_ERR_TRACKING_LOST');
  t.ok(lost, 'logged as TM_ERR_TRACKING_LOST');
  t.match(String(lost?.reason), /was removed/);
  t.equal(tr.stats?.lost, 1, 'and counted');
  const now = await r.instances();
  t.equal(now.length, 1);
  t.not(now[0], name, 'a new instance records');
});
