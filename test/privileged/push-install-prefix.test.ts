// push-install refuses an install prefix another user could change (issue 12 item 7): the prefix and every
// folder above it must be root's and writable by root only, else that user could replace the code root
// runs. The probe's shell lines run here against real folders, as they would on the machine.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { privileged } from './require-root.js';
import { prefixOwnershipScript, problems, unsafePrefixPaths, type RemoteFacts } from '../../cli/push-install/remote-checks.js';

const NOBODY = 65534;

function unsafe(prefix: string): string[] {
  const out = execFileSync('/bin/sh', ['-c', prefixOwnershipScript(prefix)], { encoding: 'utf8' });
  const lines = (k: string): string[] => out.split('\n').filter((l) => l.startsWith(`${k}=`)).map((l) => l.slice(k.length + 1).trim());
  return unsafePrefixPaths(prefix, lines('perm'), lines('link'));
}

t.test('a prefix or a folder above it that is not root-owned and root-writable only is refused', async (t) => {
  if (!privileged(t, ['stat'])) return; // changes file owners
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-prefix-'));
  t.teardown(() => fsp.rm(base, { recursive: true, force: true }));
  const opt = path.join(base, 'opt');
  const prefix = path.join(opt, 'tidemark');
  await fsp.mkdir(prefix, { recursive: true, mode: 0o755 });
  await fsp.chmod(opt, 0o755);
  await fsp.chmod(prefix, 0o755);
  t.same(unsafe(prefix), [], `a root-owned 0755 prefix under ${base} (and sticky /tmp) is accepted`);

  await fsp.chown(prefix, NOBODY, NOBODY);
  t.same(unsafe(prefix), [`${prefix} is owned by uid ${NOBODY}, not root`], 'a prefix owned by another user is refused');
  await fsp.chown(prefix, 0, 0);

  await fsp.chmod(prefix, 0o1777);
  t.match(unsafe(prefix), [/is writable by everyone/], 'a world-writable prefix is refused, sticky or not');
  await fsp.chmod(prefix, 0o755);

  await fsp.chmod(opt, 0o775);
  t.same(unsafe(prefix), [`${opt} is writable by its group (mode 775)`], 'a group-writable parent is refused');
  await fsp.chmod(opt, 0o755);

  // Not created yet: the folders above it still decide who could create it first.
  const fresh = path.join(base, 'user-owned', 'tidemark');
  await fsp.mkdir(path.dirname(fresh), { mode: 0o755 });
  await fsp.chown(path.dirname(fresh), NOBODY, NOBODY);
  t.same(unsafe(fresh), [`${path.dirname(fresh)} is owned by uid ${NOBODY}, not root`], 'a prefix yet to be made in a folder owned by another user is refused');

  // A link another user owns, even to a safe folder.
  const link = path.join(base, 'link');
  await fsp.symlink(opt, link);
  await fsp.lchown(link, NOBODY, NOBODY);
  t.same(unsafe(path.join(link, 'tidemark')), [`${link} is a symbolic link owned by uid ${NOBODY}`], 'a path through a symbolic link owned by another user is refused');

  const facts: RemoteFacts = { os: 'Linux', arch: 'x86_64', node: '/usr/bin/node', nodeVersion: '20.1.0', pid1: 'init', systemd: false, installed: false, prefixUsed: false, keptState: false, missingPaths: [], tools: ['tar', 'gzip', 'sha256sum', 'setsid'], glibc: '2.36', unsafePaths: unsafe(fresh) };
  t.match(problems(facts, 'x64'), [/owned by uid 65534, not root: the install prefix and the folders above it must be root's/], 'push-install lists it among the problems that change nothing');
});
