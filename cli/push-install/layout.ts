// Where an installed agent lives on the protected machine. Everything is under the prefix
// (default /opt/tidemark) except the systemd unit, so uninstalling is removing known folders.
import path from 'node:path';
import { unitName } from '../service-units.js';
import type { PackageManifest } from './package.js';

export const DEFAULT_PREFIX = '/opt/tidemark';
export const UNIT_NAME = unitName('agent');

export interface Layout {
  prefix: string;
  /** The unpacked package; replaced whole by an upgrade. */
  app: string;
  appNew: string;
  appOld: string;
  /** `tidemark` entry point inside the package: also what identifies the agent's process. */
  entry: string;
  etc: string;
  pki: string;
  config: string;
  /** What push-install recorded: how the agent is started, from which package. */
  record: string;
  state: string;
  logDir: string;
  log: string;
  run: string;
  pidFile: string;
  /** A `tidemark` wrapper for the operator on that machine (`tidemark status --config ...`). */
  bin: string;
  upload: string;
  unitPath: string;
}

export function layout(prefix: string): Layout {
  const p = (...s: string[]): string => path.posix.join(prefix, ...s);
  return {
    prefix,
    app: p('app'),
    appNew: p('app.new'),
    appOld: p('app.old'),
    entry: p('app', 'dist', 'cli', 'tidemark.js'),
    etc: p('etc'),
    pki: p('etc', 'pki'),
    config: p('etc', 'agent.json'),
    record: p('etc', 'install.json'),
    state: p('state'),
    logDir: p('log'),
    log: p('log', 'agent.log'),
    run: p('run'),
    pidFile: p('run', 'agent.pid'),
    bin: p('bin', 'tidemark'),
    upload: p('.upload.tar.gz'),
    unitPath: `/etc/systemd/system/${UNIT_NAME}`,
  };
}

/** `<prefix>/etc/install.json`. */
export interface InstallRecord {
  name: string;
  /** systemd: a unit runs the agent; direct: started with setsid, pid in run/agent.pid. */
  mode: 'systemd' | 'direct';
  node: string;
  volumes: string[];
  processServer: { name: string; host: string; port: number };
  package: PackageManifest;
  installedAt: string;
  upgradedAt?: string;
}

const PREFIX_RE = /^(\/[A-Za-z0-9._-]+)+$/;

/** A prefix we are willing to create and later delete folders in: absolute, plain, not a system folder. */
export function checkPrefix(prefix: string): string | null {
  if (!PREFIX_RE.test(prefix) || prefix.split('/').some((c) => c === '.' || c === '..')) {
    return `--prefix must be an absolute path of letters, digits and . _ - (got "${prefix}")`;
  }
  const top = ['/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib64', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/var'];
  if (top.includes(prefix)) return `--prefix ${prefix} is a system folder; give a folder of its own such as ${DEFAULT_PREFIX}`;
  return null;
}
