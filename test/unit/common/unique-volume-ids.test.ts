// A volume id listed twice in a daemon's config is refused at load, naming both entries, instead of
// being accepted and failing later with an unrelated geometry error. Unknown keys inside a volume entry
// are still named with a did-you-mean.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadAgentConfig } from '../../../agent/config.js';
import { Lab } from '../../../lab/lab.js';
import { loadMtConfig } from '../../../master-target/config.js';
import { loadPsConfig } from '../../../process-server/config.js';

t.test('every daemon refuses a volume id listed twice', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-dup-ids-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source: path.join(dir, 'a.img'), replica: path.join(dir, 'ra.img') }, { id: 'vol1', source: path.join(dir, 'b.img'), replica: path.join(dir, 'rb.img') }] });
  for (const [name, load, file] of [['agent', loadAgentConfig, lab.configs.agent], ['process server', loadPsConfig, lab.configs.ps], ['master target', loadMtConfig, lab.configs.mt]] as const) {
    t.throws(() => load(file), { code: 'TM_ERR_CONFIG_INVALID', message: /volumes\[1\]\.id: volume id "vol1" is listed twice \(volumes\[0\] and volumes\[1\]\)/ }, `${name}: refused, both entries named`);
  }
  // The same configs with distinct ids load.
  for (const file of Object.values(lab.configs)) {
    const cfg = JSON.parse(await fsp.readFile(file, 'utf8')) as { volumes: Array<{ id: string }> };
    cfg.volumes[1]!.id = 'vol2';
    await fsp.writeFile(file, JSON.stringify(cfg));
  }
  t.equal(loadAgentConfig(lab.configs.agent).volumes.length, 2);
  t.equal(loadPsConfig(lab.configs.ps).volumes.length, 2);
  t.equal(loadMtConfig(lab.configs.mt).volumes.length, 2);
  const mt = JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as { volumes: Array<Record<string, unknown>> };
  mt.volumes[0]!.replcia = 'x';
  await fsp.writeFile(lab.configs.mt, JSON.stringify(mt));
  t.throws(() => loadMtConfig(lab.configs.mt), { code: 'TM_ERR_CONFIG_UNKNOWN_KEY', message: /unknown key "volumes\.0\.replcia".*did you mean "replica"/ }, 'unknown keys in an entry still get a did-you-mean');
});
