// A protected machine in miniature for the privileged tests: an XFS filesystem (reflink) holding the
// disk image of the protected volume, a loop device over that image with ext4 on it, mounted; the replica
// and both sides' snapshots live on the same XFS. Plus the lab of three daemons replicating it.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { createRequire } from 'node:module';
import { Lab } from '../../lab/lab.js';
import { attachLoop, makeXfs, run, tempDir, tool } from './require-root.js';

export interface ProtectedVolume {
  xfs: string;
  image: string;
  dev: string;
  mnt: string;
  replica: string;
  agentClones: string;
  mtSnapshots: string;
  sizeBytes: number;
}

export const sh = promisify(execFile);
const require = createRequire(import.meta.url);

/** ext4 on /dev/loopN over an image on XFS, mounted; all undone after the test. */
export function protectedVolume(t: Test, sizeMiB = 128): ProtectedVolume {
  const xfs = makeXfs(t, Math.max(400, sizeMiB * 4)).mnt;
  const image = path.join(xfs, 'source.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, sizeMiB * 2 ** 20);
  const dev = attachLoop(t, image);
  run('mkfs.ext4', '-q', '-F', dev);
  const mnt = fs.mkdtempSync(path.join(tempDir(t), 'ext4-'));
  run('mount', dev, mnt);
  t.teardown(() => {
    try { run('fsfreeze', '-u', mnt); } catch { /* not frozen */ }
    try { run('umount', mnt); } catch { try { run('umount', '-l', mnt); } catch { /* gone */ } }
  });
  return { xfs, image, dev, mnt, replica: path.join(xfs, 'replica.img'), agentClones: path.join(xfs, 'agent-clones'), mtSnapshots: path.join(xfs, 'mt-snapshots'), sizeBytes: sizeMiB * 2 ** 20 };
}

/** A lab replicating `v` with the given volume options; daemons stopped after the test. */
export async function protectLab(t: Test, v: ProtectedVolume, agentVolume: Record<string, unknown>, agent: Record<string, unknown> = {}, mtVolume: Record<string, unknown> = {}): Promise<Lab> {
  const dir = tempDir(t);
  const lab = await Lab.create({
    dir,
    volumes: [{ id: 'vol1', source: v.dev, replica: v.replica, agent: agentVolume, mt: mtVolume }],
    agent: { cycleIntervalMs: 1000, ...agent },
  });
  t.teardown(() => lab.stopAll());
  return lab;
}

/** The agent's log messages (msg) since it was first started. */
export async function agentMessages(lab: Lab): Promise<string[]> {
  return (await lab.logLines('agent')).map((l) => String(l.msg));
}

/** sha256 of a file or device. */
export async function sha256(file: string): Promise<string> {
  const { stdout } = await sh('sha256sum', [file], { maxBuffer: 1 << 20 });
  return stdout.split(' ')[0]!;
}

/** e2fsck -fn after replaying the journal on a throwaway reflink copy: a crash image must be clean. */
export async function fsckClean(image: string): Promise<{ clean: boolean; output: string }> {
  const copy = `${image}.fsck`;
  await sh('cp', ['--reflink=always', image, copy]);
  try {
    await sh(tool('e2fsck')!, ['-E', 'journal_only', '-y', copy]).catch(() => {});
    const r = await sh(tool('e2fsck')!, ['-fn', copy]).then((x) => ({ clean: true, output: x.stdout }), (e: { stdout?: string; stderr?: string }) => ({ clean: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
    return r;
  } finally {
    fs.rmSync(copy, { force: true });
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A tree of real files (~23 MiB, always installed) for copy-and-delete workloads. */
export const TREE = path.join(path.dirname(require.resolve('typescript/package.json')), 'lib');
