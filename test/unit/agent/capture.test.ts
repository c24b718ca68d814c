// The app-consistent captures when the application or the system misbehaves: a pre script that fails or
// hangs, a point held past its bound, a freeze that is refused. Each time the view is fuzzy (no tag), the
// failure is counted and named without the script's command line, the post script still lets the
// application go, and the volume is never left held. Real scripts (/bin/sh), real image file; the refused
// freeze is a directory that is not a mount root, which the native addon refuses before any FIFREEZE.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { TidemarkError } from '../../../common/errors.js';
import { silentLogger } from '../../../common/log.js';
import { FreezeCapture } from '../../../agent/capture/freeze.js';
import { ScriptCapture } from '../../../agent/capture/script.js';
import { Volume } from '../../../agent/volume.js';

const log = silentLogger();

async function lab(t: Test): Promise<{ dir: string; volume: Volume; mark: (name: string) => string; marks: () => Promise<string[]> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-capture-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  await fsp.writeFile(path.join(dir, 'vol.img'), Buffer.alloc(64 * 1024, 7));
  const volume = await Volume.open(path.join(dir, 'vol.img'));
  t.teardown(() => volume.close());
  await fsp.mkdir(path.join(dir, 'marks'));
  return {
    dir,
    volume,
    // A script that leaves a file named after itself: the positive sign that it ran.
    mark: (name) => `touch ${path.join(dir, 'marks', name)}`,
    marks: async () => (await fsp.readdir(path.join(dir, 'marks'))).sort(),
  };
}

/** Resolves once `pid` no longer exists. */
async function gone(pid: number): Promise<void> {
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('script: a pre script that fails makes the view fuzzy, names only the program, and lets the application go', async (t) => {
  const l = await lab(t);
  const cap = new ScriptCapture('v1', l.volume, { pre: 'PGPASSWORD=hunter2 sh -c "exit 3" --password=hunter2', post: l.mark('post'), timeoutMs: 5000, tag: 'db' }, log);
  const view = await cap.begin();
  t.equal(view.consistency, 'FUZZY');
  t.strictSame(view.tags, [], 'no tag');
  t.equal(cap.stats.failures, 1);
  t.match(cap.stats.lastError, /pre script \(sh\) failed \(exit status 3\)/, 'the error says which script and how it ended');
  t.notMatch(cap.stats.lastError, /hunter2/, 'and not its command line');
  t.strictSame(await l.marks(), ['post'], 'the post script ran');
  await view.release();
  t.equal(cap.stats.points, 0);
});

t.test('script: a hung pre script is killed at the bound, its children with it', async (t) => {
  const l = await lab(t);
  const pidFile = path.join(l.dir, 'child.pid');
  // The script starts a child that would outlive it, records the child's pid, then hangs.
  const cap = new ScriptCapture('v1', l.volume, { pre: `sleep 600 & echo $! > ${pidFile}; wait`, post: l.mark('post'), timeoutMs: 300, tag: 'db' }, log);
  const started = Date.now();
  const view = await cap.begin();
  t.ok(Date.now() - started >= 300, 'begin waited for the bound');
  t.equal(view.consistency, 'FUZZY');
  t.match(cap.stats.lastError, /ran past 300 ms and was killed/);
  const child = Number(await fsp.readFile(pidFile, 'utf8'));
  await gone(child);
  t.pass(`the script's child ${child} was killed too`);
  t.strictSame(await l.marks(), ['post'], 'the post script ran');
});

t.test('script: a point read past its bound is not a point; the application was let go at the bound', async (t) => {
  const l = await lab(t);
  const cap = new ScriptCapture('v1', l.volume, { pre: 'true', post: l.mark('post'), timeoutMs: 200, tag: 'db' }, log);
  const view = await cap.begin();
  t.equal(view.consistency, 'APP', 'held: an app-consistent view');
  t.strictSame(view.tags, ['db']);
  // The post script at the bound is the positive sign the hold ended without settle().
  while ((await l.marks()).length === 0) await new Promise((r) => setTimeout(r, 20));
  t.equal(await view.settle!(), false, 'settle says the view did not stay consistent');
  await view.release();
  t.equal(cap.stats.failures, 1);
  t.match(cap.stats.lastError, /ran past 200 ms; the application was let go/);
  t.equal(cap.stats.points, 0, 'no point counted');
  t.strictSame(await l.marks(), ['post'], 'the post script ran once');
});

t.test('script: a point read within its bound is a point; post runs once', async (t) => {
  const l = await lab(t);
  const cap = new ScriptCapture('v1', l.volume, { pre: 'true', post: l.mark('post'), timeoutMs: 10_000, tag: 'db' }, log);
  const view = await cap.begin();
  t.equal(await view.settle!(), true);
  await view.release(1);
  t.equal(cap.stats.points, 1);
  t.equal(cap.stats.failures, 0);
  t.strictSame(await l.marks(), ['post']);
});

t.test('freeze: a pre script that fails: fuzzy, and nothing is frozen; post runs at release', async (t) => {
  const l = await lab(t);
  const state = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-capture-state-'));
  t.teardown(() => fsp.rm(state, { recursive: true, force: true }));
  const cap = new FreezeCapture('v1', l.volume, { mountpoint: path.join(l.dir, 'marks'), pre: 'exit 4', post: l.mark('post'), timeoutMs: 5000, tag: 'db' }, state, log);
  const view = await cap.begin();
  t.equal(view.consistency, 'FUZZY');
  t.match(cap.stats.lastError, /pre script \(exit\) failed \(exit status 4\)/);
  await view.release();
  t.strictSame(await l.marks(), ['post']);
});

t.test('freeze: a freeze the system refuses: fuzzy, counted, post still runs', async (t) => {
  const l = await lab(t);
  const state = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-capture-state-'));
  t.teardown(() => fsp.rm(state, { recursive: true, force: true }));
  // A directory inside a filesystem, not its root: refused before any FIFREEZE is issued.
  const cap = new FreezeCapture('v1', l.volume, { mountpoint: path.join(l.dir, 'marks'), pre: l.mark('pre'), post: l.mark('post'), timeoutMs: 5000, tag: 'db' }, state, log);
  const view = await cap.begin();
  t.equal(view.consistency, 'FUZZY');
  t.equal(cap.stats.failures, 1);
  t.match(cap.stats.lastError, /^freeze of volume v1: .*not the root of a mount/);
  await view.release();
  t.strictSame(await l.marks(), ['post', 'pre'], 'pre ran before the freeze, post after');
});

t.test('freeze: open refuses a state directory on the filesystem it freezes, and a missing mountpoint', async (t) => {
  const l = await lab(t);
  const onIt = new FreezeCapture('v1', l.volume, { mountpoint: l.dir, timeoutMs: 5000, tag: 'db' }, path.join(l.dir, 'marks'), log);
  const err = await onIt.open().then(() => null, (e: unknown) => e as TidemarkError);
  t.equal(err?.code, 'TM_ERR_CONFIG_INVALID');
  t.match(err?.message, /stateDir .* is on the filesystem it freezes/);
  const missing = new FreezeCapture('v1', l.volume, { mountpoint: path.join(l.dir, 'nowhere'), timeoutMs: 5000, tag: 'db' }, l.dir, log);
  const e2 = await missing.open().then(() => null, (e: unknown) => e as TidemarkError);
  t.equal(e2?.code, 'TM_ERR_IO');
  t.match(e2?.message, /freeze mountpoint .*nowhere: ENOENT/);
});
