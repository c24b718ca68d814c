// A freeze/script capture's tag cadence (freeze.tagIntervalMs): every point stays app-consistent, but
// only one per interval carries the tag, counted from the last point made with it. Driven through a
// real ScriptCapture on an image file, with real pre and post scripts.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ScriptCapture } from '../../../../agent/capture/script.js';
import { TagCadence } from '../../../../agent/capture/tag-cadence.js';
import { Volume } from '../../../../agent/volume.js';
import { loadAgentConfig } from '../../../../agent/config.js';
import { rootLogger } from '../../../../common/log.js';

t.test('one tagged point per interval, from the last tagged one', async (t) => {
  const c = new TagCadence(3_600_000);
  t.ok(c.due(1000), 'the first point after a start is tagged');
  c.tagged(1000);
  t.notOk(c.due(1000 + 2000), 'two seconds later: untagged');
  t.notOk(c.due(1000 + 3_599_999), 'just under the hour: untagged');
  t.ok(c.due(1000 + 3_600_000), 'an hour later: tagged');
  const every = new TagCadence(undefined);
  every.tagged(5);
  t.ok(every.due(6), 'no interval: every point is tagged (as before)');
});

t.test('a script capture tags its points at the configured cadence only', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-cadence-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const image = path.join(dir, 'vol.img');
  await fsp.writeFile(image, Buffer.alloc(1 << 20));
  const volume = await Volume.open(image);
  t.teardown(() => volume.close());
  const capture = new ScriptCapture('vol1', volume, { pre: 'true', timeoutMs: 5000, tag: 'hourly', tagIntervalMs: 3_600_000 }, rootLogger('test'));
  const tags: string[][] = [];
  for (let i = 0; i < 5; i++) {
    const v = await capture.begin();
    t.equal(v.consistency, 'APP', `point ${i}: app-consistent`);
    await v.settle?.();
    await v.release();
    tags.push(v.tags);
  }
  t.same(tags, [['hourly'], [], [], [], []], 'five cycles in a row: only the first is "hourly"');
  t.equal(capture.stats.points, 5, 'and all five are points');
});

t.test('the config takes tagIntervalMs and bounds it', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-cadence-cfg-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const write = async (tagIntervalMs: number): Promise<string> => {
    const f = path.join(dir, `a-${tagIntervalMs}.json`);
    await fsp.writeFile(f, JSON.stringify({ name: 'a', stateDir: 'st', tls: { ca: 'ca', cert: 'c', key: 'k' }, processServer: { name: 'ps', host: '127.0.0.1', port: 1 }, volumes: [{ id: 'v', path: '/x', capture: 'freeze', freeze: { mountpoint: '/mnt', tag: 'hourly', tagIntervalMs } }] }));
    return f;
  };
  t.equal(loadAgentConfig(await write(3_600_000)).volumes[0]!.freeze!.tagIntervalMs, 3_600_000);
  await write(10);
  t.throws(() => loadAgentConfig(path.join(dir, 'a-10.json')), { code: 'TM_ERR_CONFIG_INVALID' }, 'under a second is refused');
});
