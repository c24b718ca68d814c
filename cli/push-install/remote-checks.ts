// What push-install must know about the protected machine before it changes anything there: can we be
// root, is it Linux on the architecture the package's native parts were built for, is there a Node 20,
// is systemd running it, is the agent already installed, do the volumes exist.
import type { Layout } from './layout.js';
import { pushError, q, type Ssh } from './ssh.js';

export interface RemoteFacts {
  os: string;
  arch: string;
  node: string;
  nodeVersion: string;
  /** Process 1's command name; systemd manages services only when it is systemd and /run/systemd/system exists. */
  pid1: string;
  systemd: boolean;
  installed: boolean;
  /** The prefix exists and holds something other than a kept state folder. */
  prefixUsed: boolean;
  keptState: boolean;
  missingPaths: string[];
  tools: string[];
  /** glibc version node runs on; empty on musl (Alpine). */
  glibc: string;
  /** The prefix or a folder above it that someone other than root could change (prefixOwnership). */
  unsafePaths: string[];
}

/**
 * Shell lines printing `perm=<uid> <octal mode> <path>` for the prefix and every existing folder above it
 * (following links), and `link=<uid> <path>` for each that is itself a symbolic link.
 */
export function prefixOwnershipScript(prefix: string): string {
  return [
    `p=${q(prefix)}`,
    'while :; do',
    '  if [ -L "$p" ]; then echo "link=$(stat -c %u "$p") $p"; fi',
    '  if [ -e "$p" ]; then echo "perm=$(stat -L -c \'%u %a\' "$p") $p"; fi',
    '  [ "$p" = / ] && break',
    '  p=$(dirname "$p")',
    'done',
  ].join('\n');
}

/**
 * Which of them another user could use to replace the code root runs: not owned by root, or writable by
 * group or others. A folder above the prefix that is world-writable but sticky and root's (/tmp) is safe:
 * nobody else can rename or remove what root made in it. The prefix itself must not be writable at all.
 */
export function unsafePrefixPaths(prefix: string, perm: string[], link: string[]): string[] {
  const out: string[] = [];
  for (const l of link) {
    const [uid, ...rest] = l.split(' ');
    if (uid !== '0') out.push(`${rest.join(' ')} is a symbolic link owned by uid ${uid}`);
  }
  for (const l of perm) {
    const [uid, modeText, ...rest] = l.split(' ');
    const where = rest.join(' ');
    const mode = parseInt(modeText ?? '', 8);
    const stickyRoot = where !== prefix && uid === '0' && (mode & 0o1000) !== 0;
    if (uid !== '0') out.push(`${where} is owned by uid ${uid}, not root`);
    else if ((mode & 0o022) !== 0 && !stickyRoot) out.push(`${where} is writable by ${(mode & 0o002) !== 0 ? 'everyone' : 'its group'} (mode ${modeText})`);
  }
  return out;
}

/** node's process.arch → uname -m. */
const UNAME_ARCH: Record<string, string[]> = { x64: ['x86_64', 'amd64'], arm64: ['aarch64', 'arm64'], arm: ['armv7l', 'armv6l'], ia32: ['i686', 'i386'], s390x: ['s390x'], ppc64: ['ppc64le', 'ppc64'] };

function kv(out: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of out.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const k = line.slice(0, eq);
    m.set(k, [...(m.get(k) ?? []), line.slice(eq + 1).trim()]);
  }
  return m;
}

/** Log in once as the given user; a non-root login must be able to use sudo without a password. */
export async function becomeRoot(ssh: Ssh): Promise<'root' | 'sudo'> {
  const out = kv(await ssh.check(
    'echo "uid=$(id -u)"; if [ "$(id -u)" != 0 ]; then if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi; fi',
    { step: 'connect', timeoutMs: 30_000 }));
  if (out.get('uid')?.[0] === '0') return 'root';
  if (out.get('sudo')?.[0] === 'yes') {
    ssh.sudo = true;
    return 'sudo';
  }
  throw pushError('prerequisites', ssh.target.host, `${ssh.target.user} is not root and cannot use sudo without a password (sudo -n true failed): log in as root or allow NOPASSWD sudo`);
}

export async function probe(ssh: Ssh, L: Layout, node: string | undefined, volumePaths: string[]): Promise<RemoteFacts> {
  const script = [
    'echo "os=$(uname -s)"; echo "arch=$(uname -m)"',
    node === undefined ? 'NODE=$(command -v node || true)' : `NODE=${q(node)}`,
    'echo "node=$NODE"',
    'if [ -n "$NODE" ] && [ -x "$NODE" ]; then echo "nodeVersion=$("$NODE" -p process.versions.node 2>/dev/null)"; fi',
    'echo "pid1=$(ps -p 1 -o comm= 2>/dev/null || cat /proc/1/comm 2>/dev/null)"',
    'if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi',
    `if [ -f ${q(L.record)} ]; then echo installed=yes; else echo installed=no; fi`,
    // A state folder alone is what uninstall --keep-state leaves: a new install reuses it.
    `if [ -d ${q(L.prefix)} ] && [ -n "$(ls -A ${q(L.prefix)} 2>/dev/null | grep -vx state)" ]; then echo prefixUsed=yes; fi`,
    `if [ -d ${q(L.state)} ]; then echo keptState=yes; fi`,
    prefixOwnershipScript(L.prefix),
    ...volumePaths.map((p) => `[ -e ${q(p)} ] || echo missing=${q(p)}`),
    'for t in tar gzip sha256sum setsid; do command -v "$t" >/dev/null 2>&1 && echo "tool=$t"; done',
    // The package's prebuilt modules (lz4, xxhash, the addon) are linked against glibc: ask the node that will load them.
    `if [ -n "$NODE" ] && [ -x "$NODE" ]; then echo "glibc=$("$NODE" -p ${q("process.report.getReport().header.glibcVersionRuntime || ''")} 2>/dev/null)"; fi`,
  ].join('\n');
  const m = kv(await ssh.check(script, { step: 'prerequisites', timeoutMs: 30_000 }));
  const one = (k: string): string => m.get(k)?.[0] ?? '';
  return {
    os: one('os'), arch: one('arch'), node: one('node'), nodeVersion: one('nodeVersion'), pid1: one('pid1'),
    systemd: one('systemd') === 'yes' && one('pid1') === 'systemd', installed: one('installed') === 'yes',
    prefixUsed: one('prefixUsed') === 'yes', keptState: one('keptState') === 'yes', missingPaths: m.get('missing') ?? [], tools: m.get('tool') ?? [], glibc: one('glibc'),
    unsafePaths: unsafePrefixPaths(L.prefix, m.get('perm') ?? [], m.get('link') ?? []),
  };
}

/** Everything that rules the machine out, all at once; empty when the package can run there. */
export function problems(f: RemoteFacts, packageArch: string): string[] {
  const out: string[] = [];
  if (f.os !== 'Linux') out.push(`the machine runs ${f.os || 'an unknown OS'}; the agent needs Linux`);
  const arches = UNAME_ARCH[packageArch] ?? [];
  if (f.os === 'Linux' && !arches.includes(f.arch)) out.push(`the machine is ${f.arch}; the package's native parts are built for ${packageArch} (build the package on a ${f.arch} machine and pass --package)`);
  const major = Number(f.nodeVersion.split('.')[0]);
  if (!f.node) out.push('no node on the PATH: install Node.js 20 or later, or give --node <path>');
  else if (!f.nodeVersion) out.push(`${f.node} does not run`);
  else if (!(major >= 20)) out.push(`${f.node} is Node ${f.nodeVersion}; the agent needs Node 20 or later`);
  if (f.nodeVersion && !f.glibc) out.push(`${f.node} does not run on glibc (musl, as on Alpine?); the package's native modules are built for glibc`);
  for (const p of f.missingPaths) out.push(`volume path ${p} does not exist`);
  // Root runs what is installed there: a folder another user can change lets that user replace it.
  for (const p of f.unsafePaths) out.push(`${p}: the install prefix and the folders above it must be root's and writable by root only`);
  for (const t of ['tar', 'gzip', 'sha256sum', 'setsid']) if (!f.tools.includes(t)) out.push(`${t} is missing`);
  return out;
}
