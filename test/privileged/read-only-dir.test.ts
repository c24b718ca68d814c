// A state or cache folder that cannot be made because its filesystem is read-only is reported as such,
// not as mkdir's misleading "ENOENT ... mkdir": by the helper every daemon uses, and at a daemon's start.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { ensureDir } from '../../common/durable.js';
import { privileged, run, tempDir } from './require-root.js';

t.test('a read-only filesystem is named as the cause', async (t) => {
  if (!privileged(t, ['mount'])) return;
  const dir = tempDir(t);
  const ro = path.join(dir, 'ro');
  await fsp.mkdir(ro);
  run('mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tm-ro-test', ro);
  t.teardown(() => { try { run('umount', '-l', ro); } catch { /* gone */ } });
  await t.rejects(ensureDir(path.join(ro, 'cache', 'vol1')), { code: 'TM_ERR_IO', message: `cannot create ${path.join(ro, 'cache', 'vol1')}: ${ro} is on a read-only filesystem (EROFS)` });

  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source: path.join(dir, 's.img'), replica: path.join(dir, 'r.img') }] });
  const cfg = JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as Record<string, unknown>;
  cfg.cacheDir = path.join(ro, 'cache');
  await fsp.writeFile(lab.configs.ps, JSON.stringify(cfg));
  const r = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, 'process-server', '--config', lab.configs.ps], { cwd: dir, timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, out: `${stdout}${stderr}` }));
  });
  t.equal(r.code, 2, 'the process server could not start: exit 2');
  t.match(r.out, /read-only filesystem \(EROFS\)/, 'and says why');
  t.notMatch(r.out, /ENOENT/, 'not ENOENT');
});
