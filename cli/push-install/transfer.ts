// Moving files onto the protected machine over the SSH channel itself (no scp/sftp subsystem needed):
// the package is uploaded, checked against its SHA-256 and unpacked beside the installed one, so a
// broken upload never replaces a working agent; <prefix>/etc arrives as a small tar stream.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Layout } from './layout.js';
import type { AgentPackage } from './package.js';
import { pushError, q, type Ssh } from './ssh.js';

const run = promisify(execFile);

/** Upload, verify and unpack the package into <prefix>/app.new. */
export async function stagePackage(ssh: Ssh, L: Layout, pkg: AgentPackage): Promise<void> {
  await ssh.check(`set -e; umask 022; mkdir -p ${q(L.prefix)}; cat > ${q(L.upload)}`, { step: 'upload package', inputFile: pkg.file, timeoutMs: 600_000 });
  await ssh.check([
    'set -e',
    `if ! echo ${q(`${pkg.sha256}  ${L.upload}`)} | sha256sum -c --status; then rm -f ${q(L.upload)}; echo "the uploaded package does not match its SHA-256 ${pkg.sha256}" >&2; exit 1; fi`,
    `rm -rf ${q(L.appNew)}; mkdir -p ${q(L.appNew)}`,
    `tar -xzf ${q(L.upload)} -C ${q(L.appNew)} --no-same-owner`,
    `rm -f ${q(L.upload)}`,
  ].join('\n'), { step: 'unpack package', timeoutMs: 300_000 });
}

/** app.new becomes app; the replaced one is kept as app.old until `dropOld`. */
export function swapScript(L: Layout): string {
  return [
    'set -e',
    `rm -rf ${q(L.appOld)}`,
    `if [ -d ${q(L.app)} ]; then mv ${q(L.app)} ${q(L.appOld)}; fi`,
    `mv ${q(L.appNew)} ${q(L.app)}`,
  ].join('\n');
}

/** Send the files of local folder `dir` into remote `remoteDir` (created 0700; contents keep their modes). */
export async function sendDir(ssh: Ssh, dir: string, remoteDir: string, step: string): Promise<void> {
  let tarball: Buffer;
  try {
    tarball = (await run('tar', ['-czf', '-', '--owner=0', '--group=0', '-C', dir, '.'], { encoding: 'buffer', maxBuffer: 64 << 20 })).stdout;
  } catch (e) {
    throw pushError(step, ssh.target.host, `tar ${dir}: ${(e as Error).message}`, e);
  }
  await ssh.check(`set -e; umask 022; mkdir -p ${q(path.posix.dirname(remoteDir))}; umask 077; mkdir -p ${q(remoteDir)}; chmod 700 ${q(remoteDir)}; tar -xzf - -C ${q(remoteDir)} --no-same-owner`, { step, input: tarball, timeoutMs: 60_000 });
}

/** A `tidemark` command for the operator on the machine, bound to this install's node and package. */
export function wrapperScript(L: Layout, node: string): string {
  const body = `#!/bin/sh\n# Written by tidemark push-install.\nexec ${q(node)} ${q(L.entry)} "$@"\n`;
  return `set -e; mkdir -p ${q(path.posix.dirname(L.bin))}; cat > ${q(L.bin)} <<'TIDEMARK_BIN_EOF'\n${body}TIDEMARK_BIN_EOF\nchmod 755 ${q(L.bin)}`;
}
