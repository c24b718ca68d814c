// The pieces every push-install mode starts from: the SSH connection, this process server's config and
// the agent package (built from this checkout, or the one given with --package).
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadPsConfig, type PsConfig } from '../../process-server/config.js';
import type { PushOptions } from './options.js';
import { buildAgentPackage, MANIFEST_FILE, sha256File, type AgentPackage, type PackageManifest } from './package.js';
import { pushError, Ssh } from './ssh.js';

const run = promisify(execFile);

export type Say = (line: string) => void;

/** `work`: this run's private folder, where the shared connection's socket lives. */
export function connect(o: PushOptions, work: string): Ssh {
  return new Ssh({ host: o.host, user: o.user, port: o.sshPort, identity: o.identity, knownHosts: o.knownHosts, onlyKnownHosts: o.onlyKnownHosts, controlPath: path.join(work, 'ssh.sock') });
}

export function psConfig(o: PushOptions): PsConfig {
  return loadPsConfig(o.psConfig!);
}

async function readManifest(o: PushOptions): Promise<PackageManifest> {
  try {
    return JSON.parse((await run('tar', ['-xzOf', o.packageFile!, MANIFEST_FILE])).stdout) as PackageManifest;
  } catch (e) {
    throw pushError('read package', o.host, `${o.packageFile} is not a Tidemark agent package (no ${MANIFEST_FILE} inside): ${(e as Error).message}`, e);
  }
}

/** The architecture the package's native parts are for, known before the package is built. */
export async function packageArch(o: PushOptions): Promise<string> {
  return o.packageFile === undefined ? process.arch : (await readManifest(o)).arch;
}

export async function obtainPackage(o: PushOptions, work: string, say: Say): Promise<AgentPackage> {
  if (o.packageFile === undefined) {
    const pkg = await buildAgentPackage(work);
    say(`built the agent package: ${(pkg.bytes / 1048576).toFixed(1)} MiB, commit ${pkg.manifest.commit}, sha256 ${pkg.sha256.slice(0, 16)}…`);
    return pkg;
  }
  const manifest = await readManifest(o);
  const { size } = await fsp.stat(o.packageFile);
  say(`using the agent package ${o.packageFile} (commit ${manifest.commit}, built ${manifest.builtAt})`);
  return { file: o.packageFile, sha256: await sha256File(o.packageFile), bytes: size, manifest };
}
