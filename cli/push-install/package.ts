// The agent package push-install ships: a tar.gz built from this checkout with everything the agent
// needs to run and nothing to build on the protected machine (which may have no network and no
// compiler): package.json, package-lock.json, dist/ (without the tests), proto/*.proto (loaded at run
// time), the built native addon and the production node_modules, plus tidemark-package.json saying what was built from what.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tmError } from '../../common/errors.js';

const run = promisify(execFile);

export const MANIFEST_FILE = 'tidemark-package.json';

export interface PackageManifest {
  name: string;
  version: string;
  /** git commit of the checkout, with "-dirty" when it had uncommitted changes; "unknown" without git. */
  commit: string;
  builtAt: string;
  platform: NodeJS.Platform;
  arch: string;
}

export interface AgentPackage {
  file: string;
  sha256: string;
  bytes: number;
  manifest: PackageManifest;
}

function packageError(message: string): Error {
  return tmError('TM_ERR_PUSH_INSTALL', `build agent package: ${message}`, { step: 'build package' });
}

/** The checkout this code runs from: the folder above it holding package.json and native/binding.gyp. */
export function projectRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'native', 'binding.gyp'))) return dir;
    if (path.dirname(dir) === dir) throw packageError(`no Tidemark checkout (package.json and native/binding.gyp) above ${here}`);
  }
}

interface LockEntry { dev?: boolean; devOptional?: boolean; optional?: boolean }

/**
 * Production packages from package-lock.json (no npm run, no network), outermost folders only: a nested
 * node_modules inside a production package holds that package's own dependencies and travels with it.
 * Optional ones absent on disk are other platforms' binaries; a required one absent is a broken checkout.
 */
async function productionModules(root: string): Promise<string[]> {
  const lock = JSON.parse(await fsp.readFile(path.join(root, 'package-lock.json'), 'utf8')) as { packages?: Record<string, LockEntry> };
  const wanted: string[] = [];
  for (const [p, e] of Object.entries(lock.packages ?? {})) {
    if (!p.startsWith('node_modules/') || e.dev || e.devOptional) continue;
    if (existsSync(path.join(root, p))) wanted.push(p);
    else if (!e.optional) throw packageError(`${p} is a production dependency in package-lock.json but is not installed: run npm ci`);
  }
  wanted.sort();
  return wanted.filter((p) => !wanted.some((o) => o !== p && p.startsWith(`${o}/`)));
}

async function gitCommit(root: string): Promise<string> {
  try {
    const head = (await run('git', ['-C', root, 'rev-parse', 'HEAD'])).stdout.trim();
    const dirty = (await run('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'])).stdout.trim() !== '';
    return dirty ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Build `<outDir>/tidemark-agent.tar.gz` from the checkout at `root`. */
export async function buildAgentPackage(outDir: string, root = projectRoot()): Promise<AgentPackage> {
  if (!existsSync(path.join(root, 'dist', 'cli', 'tidemark.js'))) throw packageError(`${root}/dist is not built: run npm run build`);
  const release = path.join(root, 'native', 'build', 'Release');
  const addons = (await fsp.readdir(release).catch(() => [] as string[])).filter((f) => f.endsWith('.node'));
  if (addons.length === 0) throw packageError(`no native addon in ${release}: run npm run build:native`);
  const dist = (await fsp.readdir(path.join(root, 'dist'))).filter((d) => d !== 'test').map((d) => `dist/${d}`);
  // The wire schema is loaded at run time from <root>/proto (proto/messages.ts).
  const protos = (await fsp.readdir(path.join(root, 'proto'))).filter((f) => f.endsWith('.proto')).map((f) => `proto/${f}`);
  const pkg = JSON.parse(await fsp.readFile(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string };
  const manifest: PackageManifest = {
    name: pkg.name, version: pkg.version, commit: await gitCommit(root), builtAt: new Date().toISOString(),
    platform: process.platform, arch: process.arch,
  };
  await fsp.mkdir(outDir, { recursive: true });
  await fsp.writeFile(path.join(outDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  const file = path.join(outDir, 'tidemark-agent.tar.gz');
  // native/binding.gyp marks the package root for native/index.ts, which looks for the addon beside it.
  const members = ['package.json', 'package-lock.json', ...dist, ...protos, 'native/binding.gyp', ...addons.map((a) => `native/build/Release/${a}`), ...(await productionModules(root))];
  try {
    await run('tar', ['-czf', file, '--owner=0', '--group=0', '-C', root, ...members, '-C', outDir, MANIFEST_FILE], { maxBuffer: 1 << 20 });
  } catch (e) {
    throw packageError(`tar failed: ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`);
  }
  const { size } = await fsp.stat(file);
  return { file, sha256: await sha256File(file), bytes: size, manifest };
}
