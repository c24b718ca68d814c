// Service definitions for the three daemons: a hardened systemd unit each (and, through
// windows-service.ts, a Windows install script), derived from the daemon's own config file so the
// sandbox opens exactly the folders and devices that config names.
//
// For other code (push-install): `systemdUnit(opts)` returns the text of the unit. Pass `configPath`
// as the config's path ON THE MACHINE THE UNIT RUNS ON, and `config` (its parsed JSON) when that file
// is not readable here; relative paths inside it resolve against dirname(configPath), as the daemon
// resolves them. `unitName(role)` is its file name (`tidemark-agent.service`).
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { agentConfigSchema } from '../agent/config.js';
import { didYouMean, resolveFrom, validateConfig } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { mtConfigSchema } from '../master-target/config.js';
import { psConfigSchema } from '../process-server/config.js';
import { windowsConfigPath, windowsScriptName, windowsService } from './windows-service.js';

export const SERVICE_ROLES = ['agent', 'process-server', 'master-target'] as const;
export type ServiceRole = (typeof SERVICE_ROLES)[number];

export interface ServiceOptions {
  /** Detected from the config's keys when omitted. */
  role?: ServiceRole;
  /** The config file's path where the daemon runs (absolute; it is what `--config` gets). */
  configPath: string;
  /** The config's parsed JSON; read from `configPath` when omitted. */
  config?: unknown;
  /** Default /opt/tidemark: the unit runs <installDir>/dist/cli/tidemark.js. */
  installDir?: string;
  /** Default /usr/bin/node. */
  nodePath?: string;
  /** Run as this user instead of root. */
  user?: string;
}

export const LINUX_DEFAULTS = { installDir: '/opt/tidemark', nodePath: '/usr/bin/node' } as const;
/** runDaemon bounds the graceful close at 10 s; systemd waits longer before its SIGKILL. */
const STOP_TIMEOUT_S = 30;

export function unitName(role: ServiceRole, instance?: string): string {
  return instance === undefined ? `tidemark-${role}.service` : `tidemark-${role}@${instance}.service`;
}

/** Which daemon a config is for, from the keys only that daemon's schema has. */
export function detectRole(raw: unknown, source = 'config'): ServiceRole {
  const o = (raw ?? {}) as { cacheDir?: unknown; processServer?: unknown; volumes?: Array<Record<string, unknown>> };
  const vols = Array.isArray(o.volumes) ? o.volumes : [];
  if ('cacheDir' in o) return 'process-server';
  if (vols.some((v) => v && typeof v === 'object' && 'replica' in v)) return 'master-target';
  if ('processServer' in o || vols.some((v) => v && typeof v === 'object' && 'path' in v)) return 'agent';
  throw tmError('TM_ERR_CONFIG_INVALID', `${source}: cannot tell which daemon this config is for (no cacheDir, volumes[].replica or volumes[].path): pass --role`);
}

const SCHEMAS: Record<ServiceRole, z.ZodType> = { agent: agentConfigSchema, 'process-server': psConfigSchema, 'master-target': mtConfigSchema };

/** What a daemon's sandbox must let through, derived from its config. */
export interface Needs {
  role: ServiceRole;
  name: string;
  /** Folders made writable (ReadWritePaths); `optional` ones may be missing at start. */
  writable: Array<{ path: string; why: string; optional?: boolean }>;
  /** Folders the daemon would create: made before the sandbox is set up. */
  create: string[];
  devices: Array<{ path: string; access: 'r' | 'rw'; why: string }>;
  /** Every path the daemon reads or writes (decides ProtectHome and PrivateTmp). */
  touched: string[];
  /** Set when the agent runs operator scripts (freeze pre/post): why the sandbox is wider. */
  scripts?: string;
  /** A listen port below 1024 needs CAP_NET_BIND_SERVICE. */
  lowPort?: number;
}

type AnyConfig = {
  name: string; stateDir?: string; cacheDir?: string; tls: { ca: string; cert: string; key: string };
  listen?: { port: number };
  volumes: Array<{ id: string; path?: string; replica?: string; capture?: string; reflink?: { dir?: string }; freeze?: { mountpoint: string; pre?: string; post?: string }; snapshots?: { dir: string } }>;
};

const isDevice = (p: string): boolean => p.startsWith('/dev/');

/** The deepest folder holding every one of `paths` (absolute). */
function commonFolder(paths: string[]): string {
  const split = paths.map((p) => p.split('/').filter(Boolean));
  const out: string[] = [];
  for (let i = 0; split.every((s) => s[i] !== undefined && s[i] === split[0]![i]); i++) out.push(split[0]![i]!);
  return `/${out.join('/')}`;
}

/** Validate `raw` against the role's schema and work out what its sandbox needs. Pure. */
export function needsOf(role: ServiceRole, raw: unknown, configPath: string): Needs {
  if (!path.isAbsolute(configPath)) throw tmError('TM_ERR_USAGE', `service units need the config's absolute path, not "${configPath}"`);
  const cfg = validateConfig(SCHEMAS[role], raw, configPath) as AnyConfig;
  const abs = (p: string): string => path.normalize(resolveFrom(path.dirname(configPath), p));
  const n: Needs = { role, name: cfg.name, writable: [], create: [], devices: [], touched: [configPath, ...[cfg.tls.ca, cfg.tls.cert, cfg.tls.key].map(abs)] };
  const state = abs(role === 'process-server' ? cfg.cacheDir! : cfg.stateDir!);
  n.writable.push({ path: state, why: role === 'process-server' ? 'the cache of differentials' : 'its state' });
  n.create.push(state);
  n.touched.push(state);
  if (cfg.listen !== undefined && cfg.listen.port > 0 && cfg.listen.port < 1024) n.lowPort = cfg.listen.port;
  for (const [i, v] of cfg.volumes.entries()) {
    if (role === 'agent') {
      const vol = abs(v.path!);
      n.touched.push(vol);
      if (isDevice(vol)) n.devices.push({ path: vol, access: 'r', why: `volume ${v.id}, read only` });
      if (v.capture === 'reflink') {
        if (isDevice(vol) && v.reflink?.dir === undefined) {
          throw tmError('TM_ERR_CONFIG_INVALID', `${configPath}: volumes[${i}] (${v.id}): capture "reflink" on a device clones the image behind it, which only the running machine knows: set volumes[${i}].reflink.dir so the unit can open it`, { key: 'volumes.reflink.dir' });
        }
        const clones = v.reflink?.dir === undefined ? path.join(path.dirname(vol), '.tidemark-clones') : abs(v.reflink.dir);
        // Kernels before 5.18 refuse FICLONE across mounts: the image and its clones share one writable bind.
        const grant = isDevice(vol) ? clones : commonFolder([path.dirname(vol), clones]);
        n.writable.push({ path: grant, why: `reflink clones of ${v.id}${isDevice(vol) ? '' : ' (one mount with the image: FICLONE)'}` });
        n.create.push(clones);
        n.touched.push(clones);
      }
      if (v.freeze) {
        n.touched.push(v.freeze.mountpoint);
        if (v.freeze.pre !== undefined || v.freeze.post !== undefined) n.scripts = `volumes[${i}] (${v.id}) runs freeze scripts`;
      }
    } else if (role === 'master-target') {
      const rep = abs(v.replica!);
      n.touched.push(rep);
      if (isDevice(rep)) {
        n.devices.push({ path: rep, access: 'rw', why: `replica of ${v.id}` });
        if (v.snapshots) throw tmError('TM_ERR_CONFIG_INVALID', `${configPath}: volumes[${i}] (${v.id}): snapshots need an image-file replica, not ${rep}`, { key: 'volumes.snapshots' });
      } else if (v.snapshots) {
        const snaps = abs(v.snapshots.dir);
        n.writable.push({ path: commonFolder([path.dirname(rep), snaps]), why: `replica and snapshots of ${v.id} (one mount: FICLONE)` });
        n.create.push(snaps);
        n.touched.push(snaps);
      } else {
        // A missing image replica is created at first OpenVolume, so its folder, not the file.
        n.writable.push({ path: path.dirname(rep), why: `replica of ${v.id} (created there if missing)`, optional: true });
      }
    }
  }
  n.writable = outermost(n.writable);
  n.create = [...new Set(n.create)];
  return n;
}

/** Drop folders inside another granted folder: one bind mount covers them (and FICLONE needs that). */
function outermost(list: Needs['writable']): Needs['writable'] {
  const inside = (a: string, b: string): boolean => a === b || b === '/' || a.startsWith(`${b}/`);
  const out: Needs['writable'] = [];
  for (const [i, w] of list.entries()) {
    if (list.some((o, j) => (o.path !== w.path ? inside(w.path, o.path) : j < i))) continue;
    const mine = list.filter((o) => inside(o.path, w.path));
    // Optional only if every folder it stands for may be missing.
    out.push({ path: w.path, why: [...new Set(mine.map((o) => o.why))].join('; '), optional: mine.every((o) => o.optional === true) });
  }
  return out;
}

// systemd quoting: specifiers (%) everywhere, variables ($) in Exec lines; quote what has blanks or quotes.
function q(s: string, exec = false): string {
  if (/[\n\r]/.test(s)) throw tmError('TM_ERR_CONFIG_INVALID', `a path or argument in a unit cannot hold a line break: ${JSON.stringify(s)}`);
  let v = s.replace(/%/g, '%%');
  if (exec) v = v.replace(/\$/g, '$$$$');
  return /^[\w./:@+=,-]+$/.test(v) ? v : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

const UNDER = (p: string, roots: string[]): string | undefined => roots.find((r) => p === r || p.startsWith(`${r}/`));

/** The unit's text for a daemon whose needs are known. Pure. */
export function renderSystemdUnit(opts: ServiceOptions, n: Needs): string {
  const installDir = opts.installDir ?? LINUX_DEFAULTS.installDir;
  const node = opts.nodePath ?? LINUX_DEFAULTS.nodePath;
  const user = opts.user !== undefined && opts.user !== 'root' ? opts.user : undefined;
  if (user !== undefined && !/^[a-z_][a-z0-9_-]{0,31}$/i.test(user)) throw tmError('TM_ERR_USAGE', `not a user name: "${user}"`);
  const { role } = n;
  const agent = role === 'agent';
  const L: string[] = [];
  const add = (line: string, why?: string): void => {
    if (why) L.push(`# ${why}`);
    L.push(line);
  };
  const entry = path.posix.join(installDir, 'dist', 'cli', 'tidemark.js');
  L.push(`# Generated by \`tidemark service-units\` from ${opts.configPath}: regenerate it when that file changes`);
  L.push('# (the sandbox below opens the folders and devices the config names, and nothing else).');
  add('[Unit]');
  add(`Description=${`Tidemark ${role} ${n.name}`.replace(/%/g, '%%')}`);
  add('Wants=network-online.target', 'Peers are reached over the network; the daemons reconnect by themselves, but start once it is up.');
  add('After=network-online.target');
  L.push('');
  add('[Service]');
  add('Type=exec', 'exec: a start that cannot run the binary fails the start itself.');
  // systemd runs no executable whose path has quotes or backslashes, and expands no $ in it.
  if (/["'\\]/.test(node)) throw tmError('TM_ERR_USAGE', `systemd cannot run a program whose path holds a quote or backslash: ${node}`);
  add(`ExecStart=${[q(node), ...[entry, role, '--config', opts.configPath].map((a) => q(a, true))].join(' ')}`);
  const mk = n.create.map((d) => q(d, true)).join(' ');
  add(`ExecStartPre=+/bin/mkdir -p -- ${mk}`, 'Folders the daemon writes must exist before the sandbox binds them (+: runs outside the sandbox).');
  if (user !== undefined) {
    add(`User=${user}`);
    add(`ExecStartPre=+/bin/chown -- ${user} ${mk}`, `${user} owns what it writes.`);
  }
  add(`SyslogIdentifier=tidemark-${role}`);
  add('Restart=on-failure', 'Killed or crashed at any instant, a daemon converges again on restart (docs/OPERATIONS.md section 8).');
  add('RestartSec=5s');
  add('KillSignal=SIGTERM', `First SIGTERM: graceful close, bounded by the daemon at 10 s; SIGKILL after ${STOP_TIMEOUT_S} s is safe too.`);
  add('KillMode=mixed', agent ? 'SIGTERM to the daemon only: it stops its freeze scripts itself and never leaves a filesystem frozen.' : 'SIGTERM to the daemon only; SIGKILL to everything left at the timeout.');
  add(`TimeoutStopSec=${STOP_TIMEOUT_S}s`);
  add('LimitNOFILE=65536', 'A connection per peer plus journal, cache or staging files per volume.');
  add('UMask=0077', 'State, cache and replicas are private to the daemon.');
  L.push('');
  L.push('# Sandbox: as tight as each daemon can bear; every relaxation says why.');
  add('NoNewPrivileges=yes');
  if (n.scripts !== undefined) {
    add('ProtectSystem=full', `RELAXED: ${n.scripts}, the operator's own programs, which may write outside the folders below (strict would make them read-only); /usr, /boot, /etc stay read-only.`);
  } else {
    add('ProtectSystem=strict', 'Everything read-only except the folders below.');
  }
  for (const w of n.writable) add(`ReadWritePaths=${w.optional ? '-' : ''}${q(w.path)}`, `writable: ${w.why}`);
  const home = n.touched.map((p) => UNDER(p, ['/home', '/root', '/run/user']) && p).find(Boolean);
  if (home) add('ProtectHome=read-only', `RELAXED: ${home} is under a home folder (ProtectHome=yes would hide it).`);
  else add('ProtectHome=yes');
  const tmp = n.touched.map((p) => UNDER(p, ['/tmp', '/var/tmp']) && p).find(Boolean);
  if (tmp) add('PrivateTmp=no', `RELAXED: ${tmp} is under /tmp or /var/tmp (a private /tmp would hide it).`);
  else add('PrivateTmp=yes');
  if (agent || n.devices.length > 0) {
    add('PrivateDevices=no', `RELAXED: ${agent ? 'reads raw block devices; ' : ''}the real /dev, but only the devices allowed below.`);
    add('DevicePolicy=closed', '/dev/null, /dev/urandom and the like, plus the DeviceAllow lines.');
    for (const d of n.devices) add(`DeviceAllow=${d.path.replace(/%/g, '%%')} ${d.access}`, d.why);
  } else {
    add('PrivateDevices=yes');
  }
  if (agent) {
    add('# ProtectKernelTunables= not set: RELAXED, blocktrace writes its tracing instance under /sys/kernel/tracing.');
  } else {
    add('ProtectKernelTunables=yes');
  }
  add('ProtectKernelModules=yes');
  add('ProtectKernelLogs=yes');
  add('ProtectControlGroups=yes');
  add('ProtectClock=yes');
  add('ProtectHostname=yes');
  add('RestrictNamespaces=yes');
  add('RestrictRealtime=yes');
  add('RestrictSUIDSGID=yes');
  add('LockPersonality=yes');
  add('SystemCallArchitectures=native');
  add('MemoryDenyWriteExecute=no', "RELAXED: Node's JIT (V8) needs memory that is writable and executable.");
  add('PrivateMounts=yes', 'Mounts made inside (the agent\'s tracefs) stay inside.');
  add(`SystemCallFilter=@system-service${agent ? ' @mount' : ''}`, `What a network service needs${agent ? ', plus mounting tracefs for blocktrace' : ''}${n.scripts !== undefined ? ' (freeze scripts get the same: what a database client or service tool uses)' : ''}.`);
  if (!agent) add('SystemCallFilter=~@privileged @resources', 'It holds no capabilities: nothing privileged, no resource or scheduling changes.');
  add('SystemCallErrorNumber=EPERM', 'A filtered call fails instead of killing the daemon: libuv falls back from io_uring, Node\'s setrlimit is best effort.');
  if (agent) {
    add('# ProtectProc=, ProcSubset= not set: RELAXED, blocktrace reads /proc/sys/kernel/random/boot_id and scripts may look at other processes.');
  } else {
    add('ProtectProc=invisible', 'Sees its own processes only.');
    add('ProcSubset=pid', 'Needs nothing in /proc but its own process.');
  }
  if (!agent && n.lowPort === undefined) add('PrivateUsers=yes', 'It holds no capabilities, so a user namespace costs nothing: other users\' files are nobody\'s.');
  else add(`# PrivateUsers= not set: RELAXED, ${agent ? 'the agent uses CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH on the host\'s volumes' : `binding port ${n.lowPort} needs CAP_NET_BIND_SERVICE on the host`}, which a user namespace would void.`);
  add('RemoveIPC=yes');
  add('# IPAddressDeny= not set: RELAXED, peers are named by host name in the config and agents connect from anywhere; mutual TLS decides who may talk.');
  add('# User= not set: root by default (--user runs it as another user); a service user must own the state, cache and replica paths.');
  add('RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK', `TLS to peers, the loopback status port, the operator socket (AF_UNIX); netlink for glibc address lookups${n.scripts !== undefined ? '; freeze scripts reach a database over these too' : ''}.`);
  const caps = agent
    ? ['CAP_SYS_ADMIN', 'CAP_DAC_READ_SEARCH']
    : n.lowPort !== undefined ? ['CAP_NET_BIND_SERVICE'] : [];
  if (agent && n.scripts !== undefined) {
    caps.push('CAP_SETUID', 'CAP_SETGID', 'CAP_DAC_OVERRIDE', 'CAP_CHOWN', 'CAP_FOWNER', 'CAP_KILL');
    add(`CapabilityBoundingSet=${caps.join(' ')}`, 'RELAXED: CAP_SYS_ADMIN for FIFREEZE/FITHAW and tracefs, CAP_DAC_READ_SEARCH to read volumes other users own; the freeze scripts run as root and may change to a database user (setuid, setgid), use its files (dac override, chown, fowner) and signal it (kill).');
  } else {
    const why = agent
      ? 'RELAXED: CAP_SYS_ADMIN for FIFREEZE/FITHAW and mounting tracefs; CAP_DAC_READ_SEARCH to read volumes other users own (VM images).'
      : n.lowPort !== undefined ? `RELAXED: listens on port ${n.lowPort}, below 1024.` : 'No capabilities: it only reads and writes files it owns and talks TLS.';
    add(`CapabilityBoundingSet=${caps.join(' ')}`, why);
  }
  if (user !== undefined && caps.length > 0) add(`AmbientCapabilities=${caps.join(' ')}`, `${user} is not root: hand it the capabilities above.`);
  L.push('');
  add('[Install]');
  add('WantedBy=multi-user.target');
  return `${L.join('\n')}\n`;
}

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (e) {
    throw tmError('TM_ERR_CONFIG_INVALID', `read config ${file}: ${(e as Error).message}`, { path: file });
  }
}

/** The systemd unit for `opts` (reads `configPath` unless `config` is given). */
export function systemdUnit(opts: ServiceOptions): string {
  let raw = opts.config;
  if (raw === undefined) {
    try {
      raw = JSON.parse(readFileSync(opts.configPath, 'utf8'));
    } catch (e) {
      throw tmError('TM_ERR_CONFIG_INVALID', `read config ${opts.configPath}: ${(e as Error).message}`, { path: opts.configPath });
    }
  }
  const role = opts.role ?? detectRole(raw, opts.configPath);
  return renderSystemdUnit(opts, needsOf(role, raw, opts.configPath));
}

export interface ServiceUnitsArgs {
  out?: string;
  configs: string[];
  role?: string;
  installDir?: string;
  nodePath?: string;
  user?: string;
}

/**
 * `tidemark service-units`: a unit and a Windows install script per config. One config of a role:
 * tidemark-<role>.service; several of one role: tidemark-<role>@<name>.service each.
 */
export async function serviceUnitsCommand(a: ServiceUnitsArgs): Promise<string[]> {
  if (!a.out) throw tmError('TM_ERR_USAGE', 'service-units needs --out <dir>');
  if (a.configs.length === 0) throw tmError('TM_ERR_USAGE', 'service-units needs at least one --config <file>');
  if (a.role !== undefined && !(SERVICE_ROLES as readonly string[]).includes(a.role)) {
    throw tmError('TM_ERR_USAGE', `unknown role "${a.role}"; ${didYouMean(a.role, SERVICE_ROLES)}`);
  }
  const items = [];
  for (const file of a.configs) {
    const configPath = path.resolve(file);
    const raw = await readJson(configPath);
    const role = (a.role as ServiceRole | undefined) ?? detectRole(raw, configPath);
    items.push({ configPath, raw, role, needs: needsOf(role, raw, configPath) });
  }
  await fsp.mkdir(a.out, { recursive: true });
  const written: string[] = [];
  const names = new Set<string>();
  for (const it of items) {
    const instance = items.filter((o) => o.role === it.role).length > 1 ? it.needs.name : undefined;
    const unit = unitName(it.role, instance);
    if (names.has(unit)) throw tmError('TM_ERR_USAGE', `two ${it.role} configs are both named "${it.needs.name}": their units would collide`);
    names.add(unit);
    const opts: ServiceOptions = { role: it.role, configPath: it.configPath, installDir: a.installDir, nodePath: a.nodePath, user: a.user };
    const files: Array<[string, string]> = [
      [unit, renderSystemdUnit(opts, it.needs)],
      [windowsScriptName(it.role, instance), windowsService({ role: it.role, instance, configPath: windowsConfigPath(it.configPath) })],
    ];
    for (const [name, text] of files) {
      const p = path.join(a.out, name);
      await fsp.writeFile(p, text, { mode: 0o644 });
      written.push(p);
    }
  }
  return written;
}
