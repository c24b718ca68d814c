// The master target says when a filesystem it writes to fills, whether or not anything arrives to be
// written: its state directory on a small tmpfs is filled under a running master target with no process
// server connected (regression: it used to log only on a failed write, so a full disk with nothing to
// apply went unreported), and status, metrics and the log follow it to warning, critical and back.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { STATUS_PORT_FILE } from '../../common/status-server.js';
import { sampleValue, scrapeMetrics } from '../integration/prom-text.js';
import { waitFor } from '../integration/helpers.js';
import { privileged, run, tempDir } from './require-root.js';

/** waitFor, keeping the value that ended the wait. */
async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000): Promise<T> {
  let x: T | null | undefined | false = null;
  await waitFor(async () => Boolean((x = await fn())), timeoutMs, what);
  return x as T;
}

/** Leave `leaveBytes` available on the filesystem of `dir` by writing one file there. */
async function fillTo(dir: string, file: string, leaveBytes: number): Promise<void> {
  const s = await fsp.statfs(dir);
  const have = await fsp.stat(file).then((x) => x.size, () => 0);
  const size = have + s.bavail * s.bsize - leaveBytes;
  const fh = await fsp.open(file, 'w');
  try {
    await fh.write(Buffer.alloc(size, 0xa5));
  } finally {
    await fh.close();
  }
}

t.test('a filling state filesystem is reported with nothing to write', async (t) => {
  if (!privileged(t, ['mount'])) return;
  const dir = tempDir(t);
  const stateFs = path.join(dir, 'mt-state');
  await fsp.mkdir(stateFs);
  run('mount', '-t', 'tmpfs', '-o', 'size=16m', 'tm-mt-space', stateFs);
  t.teardown(() => { try { run('umount', '-l', stateFs); } catch { /* gone */ } });
  const replica = path.join(dir, 'replica.img');
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source: path.join(dir, 'source.img'), replica }], mt: { space: { checkIntervalMs: 200 } } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  const space = async (): Promise<Record<string, unknown> | null> => ((await lab.status('mt'))?.space as Record<string, unknown> | undefined) ?? null;
  const fsOf = (s: Record<string, unknown>, p: string): Record<string, unknown> | undefined => (s.filesystems as Array<Record<string, unknown>>).find((f) => f.path === p);

  const first = await until('the first measurement', async () => { const s = await space(); return (s?.filesystems as unknown[] | undefined)?.length ? s : null; }, 60_000);
  t.equal(first.health, 'ok', 'an empty filesystem is ok');
  t.same(fsOf(first, stateFs)?.holds, ['state (staging, retention)'], 'the state directory is watched');
  t.same(fsOf(first, dir)?.holds, ['replica of vol1'], "the replica's directory, on another filesystem, is watched on its own");

  const filler = path.join(stateFs, 'filler');
  const logged = async (msg: string): Promise<Record<string, unknown> | undefined> => (await lab.logLines('mt')).find((l) => l.msg === msg && l.path === stateFs);

  await fillTo(stateFs, filler, 1.2 * 1048576); // 7.5% of 16 MiB: under the 10% warning, over the 5% critical
  const warned = await until('the low-space warning', () => logged('filesystem low on space'));
  t.equal(warned.level, 40, 'logged at warn');
  t.equal((await until('status warning', async () => ((await space())?.health === 'warning' ? space() : null)))!.health, 'warning', 'status says warning');

  await fillTo(stateFs, filler, 0);
  const critical = await until('the out-of-space error', () => logged('filesystem nearly out of space: staging, retention or replica writes may fail'));
  t.equal(critical.level, 50, 'logged at error');
  t.equal(critical.code, 'TM_ERR_DISK_FULL', 'with the disk-full code');
  // A measurement taken while the filler was still growing is already critical (under 5%): wait for one
  // of the full filesystem, which the reason and the metric below are about.
  const full = (s: Record<string, unknown> | null): boolean => s?.health === 'critical' && ((s.reasons as string[] | undefined) ?? []).join().includes(`${stateFs} (state (staging, retention)): 0.0% free`);
  const st = await until('status critical at 0% free', async () => { const s = await space(); return full(s) ? s : null; });
  t.match((st.reasons as string[]).join(), new RegExp(`${stateFs}.*state \\(staging, retention\\)\\): 0\\.0% free`), 'the reason names the filesystem and what it holds');

  const port = Number(await fsp.readFile(path.join(lab.stateDirs.mt, STATUS_PORT_FILE), 'utf8'));
  const families = await scrapeMetrics(port);
  t.equal(sampleValue(families, 'tidemark_mt_filesystem_free_ratio', { path: stateFs }), 0, 'the free ratio metric is 0');
  t.ok((sampleValue(families, 'tidemark_mt_filesystem_free_ratio', { path: dir }) ?? 0) > 0, 'the replica filesystem has its own figure');

  await fsp.rm(filler);
  await until('the recovery message', () => logged('filesystem has space again'));
  t.equal((await until('status ok', async () => ((await space())?.health === 'ok' ? space() : null)))!.health, 'ok', 'status is ok again');
  t.equal(lab.procs.get('mt')?.exitCode ?? null, null, 'the master target kept running');
});
