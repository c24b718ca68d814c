// `tidemark push-install` command line: parsed and checked here, before anything touches the network.
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { didYouMean } from '../../common/config.js';
import { tmError, type TidemarkError } from '../../common/errors.js';
import { checkPrefix, DEFAULT_PREFIX } from './layout.js';

export const PUSH_INSTALL_USAGE = `usage: tidemark push-install --host <host> --identity <key> [ssh options] <what>

install (default):
  --ps-config <ps.json>       this process server's config: its name, status and volume routing
  --pki <ca-dir>              the CA that issues the agent's certificate (tidemark pki init)
  --volume id=<id>,path=<path>[,tracker=scan|blocktrace][,capture=none|reflink]   (repeat per volume)
  [--name <agent name>]       certificate and agent name (default: --host)
  [--ps-address <host>[:<port>]]  where the agent reaches this process server (default: its listen address)
upgrade:    --upgrade --ps-config <ps.json> [--package <tar.gz>]
uninstall:  --uninstall [--keep-state]

ssh options:
  --user <user>               login (default root; another user needs passwordless sudo)
  --ssh-port <port>           (default 22)
  --known-hosts <file>        the only known_hosts file trusted (default ~/.ssh/known_hosts)
other:
  --prefix <dir>              install folder on the machine (default ${DEFAULT_PREFIX})
  --node <path>               node on the machine (default: node on its PATH; Node 20 or later)
  --package <tar.gz>          ship this agent package instead of building one from this checkout
  --timeout <s>               wait this long for the agent to connect (default 60)`;

export type VolumeSpec = Record<string, string>;

export interface PushOptions {
  mode: 'install' | 'upgrade' | 'uninstall';
  host: string;
  user: string;
  sshPort: number;
  identity: string;
  knownHosts: string;
  onlyKnownHosts: boolean;
  prefix: string;
  node: string | undefined;
  psConfig: string | undefined;
  psAddress: { host: string; port: number | undefined } | undefined;
  pki: string | undefined;
  name: string;
  volumes: VolumeSpec[];
  packageFile: string | undefined;
  timeoutMs: number;
  keepState: boolean;
}

const VOLUME_KEYS = ['id', 'path', 'tracker', 'capture'];
const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** A usage error; the command line adds the pointer to `tidemark push-install --help` (cli/usage.ts). */
function usage(msg: string): TidemarkError {
  return tmError('TM_ERR_USAGE', `push-install: ${msg}`);
}

const FLAGS = ['host', 'user', 'ssh-port', 'identity', 'known-hosts', 'prefix', 'node', 'ps-config', 'ps-address', 'pki', 'name', 'volume', 'package', 'timeout', 'upgrade', 'uninstall', 'keep-state'];

/** node:util parseArgs's complaint, with a did-you-mean for an unknown option. */
function parseError(e: Error): TidemarkError {
  const unknown = /Unknown option '([^']+)'/.exec(e.message);
  if (unknown) return usage(`unknown option '${unknown[1]}'; ${didYouMean(unknown[1]!, FLAGS.map((f) => `--${f}`))}`);
  return usage(e.message.split('. ')[0]!);
}

/** `id=db,path=/dev/loop5,tracker=scan` → { id, path, tracker }. Paths with a comma cannot be given this way. */
export function parseVolumeSpec(spec: string): VolumeSpec {
  const out: VolumeSpec = {};
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw usage(`--volume "${spec}": "${part}" is not key=value`);
    const key = part.slice(0, eq);
    if (!VOLUME_KEYS.includes(key)) throw usage(`--volume "${spec}": unknown key "${key}"; ${didYouMean(key, VOLUME_KEYS)}`);
    if (key in out) throw usage(`--volume "${spec}": "${key}" given twice`);
    out[key] = part.slice(eq + 1);
  }
  if (!out.id || !out.path) throw usage(`--volume "${spec}" needs id=<id> and path=<path>`);
  if (!path.isAbsolute(out.path)) throw usage(`--volume "${spec}": path must be absolute on the protected machine`);
  return out;
}

function parseAddress(s: string): { host: string; port: number | undefined } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(s);
  if (!m) throw usage(`--ps-address "${s}" is not <host>[:<port>]`);
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && (port < 1 || port > 65535)) throw usage(`--ps-address "${s}": port out of range`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function int(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw usage(`--${name} must be a whole number from ${min} to ${max} (got "${v}")`);
  return n;
}

export function parsePushOptions(argv: string[]): PushOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        host: { type: 'string' }, user: { type: 'string' }, 'ssh-port': { type: 'string' }, identity: { type: 'string' },
        'known-hosts': { type: 'string' }, prefix: { type: 'string' }, node: { type: 'string' },
        'ps-config': { type: 'string' }, 'ps-address': { type: 'string' }, pki: { type: 'string' }, name: { type: 'string' },
        volume: { type: 'string', multiple: true }, package: { type: 'string' }, timeout: { type: 'string' },
        upgrade: { type: 'boolean' }, uninstall: { type: 'boolean' }, 'keep-state': { type: 'boolean' },
      },
    });
  } catch (e) {
    throw parseError(e as Error);
  }
  const v = parsed.values;
  if (v.upgrade && v.uninstall) throw usage('give --upgrade or --uninstall, not both');
  const mode = v.upgrade ? 'upgrade' : v.uninstall ? 'uninstall' : 'install';
  if (!v.host) throw usage('--host <host> is required');
  if (!v.identity) throw usage('--identity <private key file> is required');
  if (mode !== 'uninstall' && !v['ps-config']) throw usage(`${mode} needs --ps-config <process server config>`);
  if (mode === 'install') {
    if (!v.pki) throw usage('install needs --pki <CA folder> to issue the agent certificate');
    if (!v.volume?.length) throw usage('install needs at least one --volume id=<id>,path=<path>');
  } else {
    for (const k of ['volume', 'pki', 'name', 'ps-address'] as const) if (v[k] !== undefined) throw usage(`--${k} is for install; ${mode} keeps what was installed`);
  }
  if (v['keep-state'] && mode !== 'uninstall') throw usage('--keep-state is for --uninstall');
  const name = v.name ?? v.host;
  if (!NAME_RE.test(name)) throw usage(`agent name "${name}" must be 1-64 characters of A-Z a-z 0-9 . _ - (give --name)`);
  // <prefix>/etc/pki/ca.crt is the CA's certificate: an agent named "ca" would overwrite it.
  if (name === 'ca') throw usage('the agent cannot be named "ca" (give --name)');
  const prefix = v.prefix ?? DEFAULT_PREFIX;
  const bad = checkPrefix(prefix);
  if (bad) throw usage(bad);
  const volumes = (v.volume ?? []).map(parseVolumeSpec);
  const ids = volumes.map((x) => x.id);
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  if (dup !== undefined) throw usage(`volume id "${dup}" given twice`);
  return {
    mode,
    host: v.host,
    user: v.user ?? 'root',
    sshPort: int('ssh-port', v['ssh-port'], 22, 1, 65535),
    identity: path.resolve(v.identity),
    knownHosts: path.resolve(v['known-hosts'] ?? path.join(os.homedir(), '.ssh', 'known_hosts')),
    onlyKnownHosts: v['known-hosts'] !== undefined,
    prefix,
    node: v.node,
    psConfig: v['ps-config'],
    psAddress: v['ps-address'] === undefined ? undefined : parseAddress(v['ps-address']),
    pki: v.pki,
    name,
    volumes,
    packageFile: v.package === undefined ? undefined : path.resolve(v.package),
    timeoutMs: int('timeout', v.timeout, 60, 1, 3600) * 1000,
    keepState: v['keep-state'] ?? false,
  };
}
