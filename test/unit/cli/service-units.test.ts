// Service definitions: every generated systemd unit passes the real `systemd-analyze verify` with no
// warning (and a broken one is caught, so the check can fail), each role gets its own sandbox, and the
// Windows install script is well formed (literals balanced, failure actions set, its WinSW XML parses).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { detectRole, needsOf, renderSystemdUnit, serviceUnitsCommand, systemdUnit, unitName, type ServiceOptions } from '../../../cli/service-units.js';
import { FAILURE_ACTIONS, psQuote, windowsConfigPath, windowsService } from '../../../cli/windows-service.js';
import { caught } from '../caught.js';
import { tool } from '../../privileged/require-root.js';

/** The checkout: ExecStart must name a real node and a real dist/cli/tidemark.js for verify. */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const BIN = path.join(ROOT, 'dist', 'cli', 'tidemark.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-units-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const ANALYZE = tool('systemd-analyze');

/** systemd-analyze verify: exit status and what it said. Any output at all is a problem in our units. */
function verify(unitFile: string): { status: number | null; problems: string } {
  if (ANALYZE === null) return { status: -1, problems: 'systemd-analyze is not installed (Debian package systemd)' };
  const r = spawnSync(ANALYZE, ['verify', '--man=no', unitFile], { encoding: 'utf8' });
  return { status: r.status, problems: `${r.stdout}${r.stderr}`.trim() };
}

/** The unit's directives: key -> values, in order (comments and sections dropped). */
function directives(unit: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const hit = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (hit) m.set(hit[1]!, [...(m.get(hit[1]!) ?? []), hit[2]!]);
  }
  return m;
}

const tls = { ca: 'pki/ca.crt', cert: 'pki/node.crt', key: 'pki/node.key' };
const write = (name: string, o: unknown): string => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, JSON.stringify(o));
  return f;
};

t.test('systemd-analyze is installed (CI must not pass by skipping this file)', async (t) => {
  t.not(ANALYZE, null, 'systemd-analyze found (Debian package systemd, installed by .ci/run)');
  t.ok(fs.existsSync(BIN), `${BIN} exists (ExecStart names it)`);
});

t.test('`tidemark service-units` writes a unit and a Windows script per config; every unit verifies', async (t) => {
  const img = path.join(dir, 'vm', 'disk.img');
  fs.mkdirSync(path.dirname(img), { recursive: true });
  fs.writeFileSync(img, '');
  const agent = write('agent.json', {
    name: 'db-host', stateDir: 'agent-state', tls, processServer: { host: '127.0.0.1', port: 7410, name: 'ps-1' },
    volumes: [
      { id: 'db', path: '/dev/loop7', tracker: 'blocktrace', capture: 'freeze', freeze: { mountpoint: '/srv/db' } },
      { id: 'vm', path: img, capture: 'reflink' },
    ],
  });
  const ps = write('ps.json', { name: 'ps-1', cacheDir: 'ps-cache', tls, masterTargets: [{ name: 'mt-1', port: 7420 }], volumes: [{ id: 'db', agent: 'db-host', masterTarget: 'mt-1' }] });
  const mt = write('mt.json', {
    name: 'mt-1', stateDir: 'mt-state', tls,
    volumes: [{ id: 'db', replica: 'replicas/db.img', processServers: ['ps-1'], snapshots: { dir: 'replicas/snaps', keep: 3 } }, { id: 'vm', replica: '/dev/sdz', processServers: ['ps-1'] }],
  });
  const out = path.join(dir, 'out');
  const r = spawnSync(process.execPath, [BIN, 'service-units', '--out', out, '--config', agent, '--config', ps, '--config', mt, '--install-dir', ROOT, '--node', process.execPath], { encoding: 'utf8' });
  t.equal(r.status, 0, `exit 0 (${r.stderr.trim()})`);
  const files = fs.readdirSync(out).sort();
  t.strictSame(files, ['install-agent.ps1', 'install-master-target.ps1', 'install-process-server.ps1', 'tidemark-agent.service', 'tidemark-master-target.service', 'tidemark-process-server.service']);
  t.equal(r.stdout.trim().split('\n').length, 6, 'each file written is named on stdout');
  for (const f of files.filter((n) => n.endsWith('.service'))) {
    const v = verify(path.join(out, f));
    t.equal(v.status, 0, `${f}: systemd-analyze verify exits 0`);
    t.equal(v.problems, '', `${f}: no warning (unknown directive, bad value, missing binary)`);
  }

  const a = directives(fs.readFileSync(path.join(out, 'tidemark-agent.service'), 'utf8'));
  t.strictSame(a.get('ExecStart'), [`${process.execPath} ${BIN} agent --config ${agent}`], 'agent: runs tidemark agent with its config');
  t.match(a.get('CapabilityBoundingSet')?.[0], /\bCAP_SYS_ADMIN\b/, 'agent: CAP_SYS_ADMIN (FIFREEZE, tracefs)');
  t.notOk(a.has('ProtectKernelTunables'), 'agent: ProtectKernelTunables not set (tracefs under /sys must stay writable)');
  t.strictSame(a.get('PrivateDevices'), ['no'], 'agent: sees the real /dev');
  t.strictSame(a.get('DevicePolicy'), ['closed'], 'agent: but only the devices allowed');
  t.strictSame(a.get('DeviceAllow'), ['/dev/loop7 r'], 'agent: its block-device volume, read only');
  t.strictSame(a.get('ProtectSystem'), ['strict']);
  t.strictSame(a.get('ReadWritePaths'), [path.join(dir, 'agent-state'), path.dirname(img)], 'agent: its state dir (relative to the config) and the image folder for the clones');
  t.strictSame(a.get('PrivateTmp'), ['no'], 'PrivateTmp relaxed: this test keeps the config under /tmp');

  const p = directives(fs.readFileSync(path.join(out, 'tidemark-process-server.service'), 'utf8'));
  t.strictSame(p.get('ProtectSystem'), ['strict'], 'process server: ProtectSystem=strict');
  t.strictSame(p.get('ReadWritePaths'), [path.join(dir, 'ps-cache')], 'process server: writes its cache dir only');
  t.strictSame(p.get('ProtectKernelTunables'), ['yes']);
  t.strictSame(p.get('PrivateDevices'), ['yes']);
  t.strictSame(p.get('CapabilityBoundingSet'), [''], 'process server: no capabilities');

  const m = directives(fs.readFileSync(path.join(out, 'tidemark-master-target.service'), 'utf8'));
  t.strictSame(m.get('ProtectSystem'), ['strict'], 'master target: ProtectSystem=strict');
  t.strictSame(m.get('ReadWritePaths'), [path.join(dir, 'mt-state'), path.join(dir, 'replicas')], 'master target: its state dir and the replica+snapshots folder');
  t.strictSame(m.get('DeviceAllow'), ['/dev/sdz rw'], 'master target: its block-device replica, read-write');
  t.strictSame(m.get('ProtectKernelTunables'), ['yes']);
  t.strictSame(m.get('CapabilityBoundingSet'), ['']);
  t.strictSame(m.get('ExecStartPre'), [`+/bin/mkdir -p -- ${path.join(dir, 'mt-state')} ${path.join(dir, 'replicas', 'snaps')}`], 'folders it creates exist before the sandbox binds them');

  for (const [role, d] of [['agent', a], ['process-server', p], ['master-target', m]] as const) {
    for (const [k, v] of Object.entries({ Type: 'exec', Restart: 'on-failure', NoNewPrivileges: 'yes', ProtectHome: 'yes', ProtectKernelModules: 'yes', ProtectControlGroups: 'yes', RestrictNamespaces: 'yes', LockPersonality: 'yes', RestrictRealtime: 'yes', SystemCallArchitectures: 'native', MemoryDenyWriteExecute: 'no', KillSignal: 'SIGTERM', TimeoutStopSec: '30s', LimitNOFILE: '65536', WantedBy: 'multi-user.target', After: 'network-online.target' })) {
      t.strictSame(d.get(k), [v], `${role}: ${k}=${v}`);
    }
    t.ok(d.has('RestartSec'), `${role}: RestartSec`);
  }
});

t.test('every relaxation carries a comment saying why', async (t) => {
  const unit = fs.readFileSync(path.join(dir, 'out', 'tidemark-agent.service'), 'utf8').split('\n');
  const relaxed = /^(ProtectSystem=full|ProtectHome=read-only|PrivateTmp=no|PrivateDevices=no|MemoryDenyWriteExecute=no|CapabilityBoundingSet=.+|AmbientCapabilities=.+)$/;
  let n = 0;
  for (const [i, line] of unit.entries()) {
    if (!relaxed.test(line)) continue;
    n++;
    t.match(unit[i - 1], /^# RELAXED: \S/, `${line}: the line above says why`);
  }
  t.ok(n >= 4, `the agent's unit has its relaxations (${n})`);
  t.ok(unit.includes('# ProtectKernelTunables= not set: RELAXED, blocktrace writes its tracing instance under /sys/kernel/tracing.'), 'the missing ProtectKernelTunables is explained');
});

t.test('the check can fail: a misspelt directive, a bad value and a missing binary are caught', async (t) => {
  const good = fs.readFileSync(path.join(dir, 'out', 'tidemark-process-server.service'), 'utf8');
  const cases: Array<[string, string, RegExp]> = [
    ['misspelt directive', good.replace('ProtectSystem=strict', 'ProtectSytem=strict'), /Unknown key 'ProtectSytem'|Unknown key name 'ProtectSytem'/],
    ['bad value', good.replace('ProtectSystem=strict', 'ProtectSystem=stricter'), /stricter/],
    ['missing binary', good.replace(`ExecStart=${process.execPath}`, `ExecStart=${process.execPath}-missing`), /not executable|No such file/],
  ];
  for (const [what, text, expect] of cases) {
    t.not(text, good, `${what}: the unit was changed`);
    const f = path.join(dir, 'broken.service');
    fs.writeFileSync(f, text);
    const v = verify(f);
    t.ok(v.status !== 0 || v.problems !== '', `${what}: reported`);
    t.match(v.problems, expect, `${what}: named (${v.problems.split('\n')[0]})`);
  }
});

t.test('sandbox decisions follow the config', async (t) => {
  const etc = (role: ServiceOptions['role'], config: unknown, extra: Partial<ServiceOptions> = {}): Map<string, string[]> =>
    directives(systemdUnit({ role, configPath: '/etc/tidemark/x.json', config, ...extra }));
  const agentCfg = { name: 'a', stateDir: '/var/lib/tidemark/agent', tls, processServer: { host: 'ps.example', port: 7410, name: 'p' }, volumes: [{ id: 'v', path: '/dev/sdb' }] };
  const a = etc(undefined, agentCfg);
  t.strictSame(a.get('PrivateTmp'), ['yes'], 'nothing under /tmp: a private /tmp');
  t.strictSame(a.get('ProtectHome'), ['yes'], 'nothing under /home: home folders hidden');
  t.strictSame(a.get('ExecStart'), ['/usr/bin/node /opt/tidemark/dist/cli/tidemark.js agent --config /etc/tidemark/x.json'], 'defaults: /usr/bin/node, /opt/tidemark');
  t.strictSame(a.get('ReadWritePaths'), ['/var/lib/tidemark/agent']);

  const home = etc('agent', { ...agentCfg, stateDir: '/home/ops/tm-state' });
  t.strictSame(home.get('ProtectHome'), ['read-only'], 'state under /home: home folders read-only, the state dir writable');
  t.strictSame(home.get('ReadWritePaths'), ['/home/ops/tm-state']);

  const scripts = etc('agent', { ...agentCfg, volumes: [{ id: 'v', path: '/dev/sdb', tracker: 'blocktrace', capture: 'freeze', freeze: { mountpoint: '/srv/db', pre: '/usr/local/bin/checkpoint' } }] });
  t.strictSame(scripts.get('ProtectSystem'), ['full'], 'freeze scripts (the operator\'s programs): ProtectSystem=full');
  t.match(scripts.get('CapabilityBoundingSet')?.[0], /CAP_SYS_ADMIN CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID/, 'freeze scripts: capabilities widened to what a script changing to a database user needs, no more');
  t.ok(scripts.has('RestrictAddressFamilies'), 'freeze scripts: address families still restricted (unix and IP)');

  const ps = { name: 'p', cacheDir: '/var/cache/tidemark', tls, listen: { host: '0.0.0.0', port: 443 }, masterTargets: [{ name: 'm', port: 7420 }], volumes: [{ id: 'v', agent: 'a', masterTarget: 'm' }] };
  const low = etc(undefined, ps, { user: 'tidemark' });
  t.strictSame(low.get('CapabilityBoundingSet'), ['CAP_NET_BIND_SERVICE'], 'a port below 1024 needs CAP_NET_BIND_SERVICE');
  t.strictSame(low.get('AmbientCapabilities'), ['CAP_NET_BIND_SERVICE'], 'handed to a non-root user');
  t.strictSame(low.get('User'), ['tidemark']);
  t.strictSame(low.get('ExecStartPre'), ['+/bin/mkdir -p -- /var/cache/tidemark', '+/bin/chown -- tidemark /var/cache/tidemark'], 'the user owns its cache dir');

  const mt = etc(undefined, { name: 'm', stateDir: '/var/lib/tidemark/mt', tls, volumes: [{ id: 'v', replica: '/srv/replicas/v.img', processServers: ['p'] }, { id: 'w', replica: '/var/lib/tidemark/mt/w.img', processServers: ['p'] }] });
  t.strictSame(mt.get('ReadWritePaths'), ['/var/lib/tidemark/mt', '-/srv/replicas'], 'replica folder optional (a replica is created there if missing); one inside the state dir needs no second grant');
  t.strictSame(mt.get('PrivateDevices'), ['yes'], 'image replicas only: no devices at all');

  t.equal(detectRole(agentCfg), 'agent');
  t.equal(detectRole(ps), 'process-server');
  t.equal(detectRole({ volumes: [{ replica: 'x' }] }), 'master-target');
  t.equal(caught(() => detectRole({ name: 'x' }))?.code, 'TM_ERR_CONFIG_INVALID', 'an unrecognisable config: pass --role');
  t.equal(caught(() => systemdUnit({ role: 'agent', configPath: '/etc/tidemark/x.json', config: { ...agentCfg, stateDri: 'x' } }))?.code, 'TM_ERR_CONFIG_UNKNOWN_KEY', 'validated by the daemon\'s own schema');
  t.equal(caught(() => systemdUnit({ configPath: '/etc/tidemark/x.json', config: { ...agentCfg, volumes: [{ id: 'v', path: '/dev/loop3', capture: 'reflink' }] } }))?.code, 'TM_ERR_CONFIG_INVALID', 'reflink on a device needs reflink.dir (the backing file is unknown here)');
  t.equal(caught(() => systemdUnit({ configPath: 'x.json', config: agentCfg }))?.code, 'TM_ERR_USAGE', 'the config path must be absolute');
  t.equal(unitName('agent'), 'tidemark-agent.service');
  t.equal(unitName('master-target', 'mt-2'), 'tidemark-master-target@mt-2.service');
});

t.test('paths with blanks, quotes, % and $ are quoted so systemd reads them back', async (t) => {
  // A real node behind an awkward path, so verify checks that the quoted ExecStart finds it. (systemd
  // refuses quotes and backslashes in a program's path: those are refused here too.)
  const nodeDir = path.join(dir, 'node dir 100% $x');
  fs.mkdirSync(nodeDir, { recursive: true });
  const node = path.join(nodeDir, 'node bin');
  fs.symlinkSync(process.execPath, node);
  const configPath = path.join(dir, 'cfg "q" 100% $HOME', 'agent.json');
  const opts: ServiceOptions = { role: 'agent', configPath, config: { name: 'a', stateDir: 'state dir', tls, processServer: { host: 'ps.example', port: 7410, name: 'p' }, volumes: [{ id: 'v', path: '/dev/sdb' }] }, nodePath: node, installDir: ROOT };
  const text = systemdUnit(opts);
  const f = path.join(dir, 'odd.service');
  fs.writeFileSync(f, text);
  const v = verify(f);
  t.equal(v.status, 0, 'verify exits 0');
  t.equal(v.problems, '', 'no warning: the quoted node path was found');
  const d = directives(text);
  t.strictSame(d.get('ExecStart'), [`"${path.join(dir, 'node dir 100%% $x', 'node bin')}" ${BIN} agent --config "${path.join(dir, 'cfg \\"q\\" 100%% $$HOME', 'agent.json')}"`], 'ExecStart: blanks quoted, % doubled, $ doubled in arguments (not in the program path, which systemd does not expand)');
  t.strictSame(d.get('ReadWritePaths'), [`"${path.join(dir, 'cfg \\"q\\" 100%% $HOME', 'state dir')}"`], 'ReadWritePaths quoted, % doubled');
  t.equal(caught(() => systemdUnit({ ...opts, nodePath: '/opt/"node"/bin/node' }))?.code, 'TM_ERR_USAGE', 'a program path systemd cannot run is refused');
  t.equal(caught(() => renderSystemdUnit({ ...opts, user: 'bad user' }, needsOf('agent', opts.config, configPath)))?.code, 'TM_ERR_USAGE', 'a user name is checked');
});

/** Lex PowerShell outside here-strings: every '…' and "…" literal closes on its line; ( ) { } balance. */
function psProblems(script: string): string[] {
  const problems: string[] = [];
  let depth = 0;
  let here = false;
  for (const [n, line] of script.split(/\r\n/).entries()) {
    if (here) {
      if (line.startsWith("'@")) here = false;
      continue;
    }
    let s: 'none' | 'single' | 'double' = 'none';
    for (let i = 0; i < line.length; i++) {
      const c = line[i]!;
      if (s === 'single') {
        if (c === "'" && line[i + 1] === "'") i++;
        else if (c === "'") s = 'none';
      } else if (s === 'double') {
        if (c === '`') i++;
        else if (c === '"') s = 'none';
      } else if (c === '#') break;
      else if (c === '@' && line[i + 1] === "'" && i + 2 === line.length) {
        here = true;
        break;
      } else if (c === "'") s = 'single';
      else if (c === '"') s = 'double';
      else if (c === '(' || c === '{') depth++;
      else if (c === ')' || c === '}') depth--;
    }
    if (s !== 'none') problems.push(`line ${n + 1}: unclosed ${s}-quoted string: ${line}`);
  }
  if (here) problems.push('here-string not closed');
  if (depth !== 0) problems.push(`brackets unbalanced by ${depth}`);
  return problems;
}

function xmlOf(script: string): string {
  const m = /\r\n\$Xml = @'\r\n([\s\S]*?)\r\n'@\r\n/.exec(script);
  return m?.[1] ?? '';
}

/** Parse with a real XML parser (Python's, in CI for node-gyp); returns what it rejected, or ''. */
function xmlError(xml: string): string {
  const r = spawnSync('python3', ['-c', 'import sys, xml.etree.ElementTree as E; E.fromstring(sys.stdin.read())'], { input: xml, encoding: 'utf8' });
  return r.status === 0 ? '' : (r.stderr || r.error?.message || 'python3 failed').trim().split('\n').pop()!;
}

t.test('the Windows install script is well formed', async (t) => {
  for (const role of ['agent', 'process-server', 'master-target'] as const) {
    const ps1 = fs.readFileSync(path.join(dir, 'out', `install-${role}.ps1`), 'utf8');
    t.strictSame(psProblems(ps1), [], `${role}: literals closed, brackets balanced`);
    t.match(ps1, /^#Requires -RunAsAdministrator\r\n/, `${role}: needs an elevated shell`);
    t.match(ps1, `\r\n$Name = 'tidemark-${role}'\r\n`, `${role}: service name`);
    t.match(ps1, `[string]$Config = 'C:\\ProgramData\\Tidemark\\${{ agent: 'agent', 'process-server': 'ps', 'master-target': 'mt' }[role]}.json',`, `${role}: its config, on the Windows side`);
    t.match(ps1, "[string]$InstallDir = 'C:\\Program Files\\Tidemark',", `${role}: install folder default, quoted`);
    t.match(ps1, "[string]$Node = 'C:\\Program Files\\nodejs\\node.exe',", `${role}: node default, quoted`);
    t.match(ps1, `-BinaryPathName ('"' + $Exe + '"')`, `${role}: the service binary path is quoted (it has a space)`);
    t.match(ps1, `\r\nsc.exe failure $Name ${FAILURE_ACTIONS} | Out-Null\r\n`, `${role}: restart failure actions`);
    t.match(ps1, /\r\nsc\.exe failureflag \$Name 1 \| Out-Null\r\n/, `${role}: failure actions also on an error exit`);
    const xml = xmlOf(ps1);
    t.equal(xmlError(xml), '', `${role}: its WinSW XML parses`);
    t.match(xml, `<id>tidemark-${role}</id>`);
    t.match(xml, '<onfailure action="restart" delay="5 sec"/>', `${role}: WinSW restarts it too`);
    t.match(xml, /<stoptimeout>30 sec<\/stoptimeout>/);
    t.match(xml, `<argument>@SCRIPT@</argument>\r\n  <argument>${role}</argument>\r\n  <argument>--config</argument>\r\n  <argument>@CONFIG@</argument>`, `${role}: runs tidemark ${role} --config <file>`);
    for (const ph of new Set(xml.match(/@[A-Z]+@/g) ?? [])) t.match(ps1, `.Replace('${ph}', (Esc `, `${role}: ${ph} is filled in, XML-escaped`);
  }
  // The checks catch what they are for.
  t.not(psProblems("$a = 'x\r\n$b = 1\r\n"), [], 'an unclosed literal is caught');
  t.not(xmlError('<service><id>x</service>'), '', 'malformed XML is caught');

  const tricky = windowsService({ role: 'agent', instance: 'db-1', configPath: "D:\\Tidemark's config\\agent.json" });
  t.strictSame(psProblems(tricky), [], 'a quote in a path stays inside its literal');
  t.match(tricky, "[string]$Config = 'D:\\Tidemark''s config\\agent.json',", 'doubled inside single quotes');
  t.match(tricky, "$Name = 'tidemark-agent-db-1'");
  t.equal(xmlError(xmlOf(tricky)), '');
  t.equal(psQuote('a\u2019b'), "'a\u2019\u2019b'", 'typographic quotes (PowerShell closes on them) are doubled too');
  t.equal(windowsConfigPath('/etc/tidemark/agent.json'), 'C:\\ProgramData\\Tidemark\\agent.json');
  t.equal(windowsConfigPath('E:\\tm\\agent.json'), 'E:\\tm\\agent.json');
});

t.test('several configs of one role get one instance unit each; a clash is refused', async (t) => {
  const mtA = write('mt-a.json', { name: 'mt-a', stateDir: 'a', tls, volumes: [{ id: 'v', replica: 'a.img', processServers: ['p'] }] });
  const mtB = write('mt-b.json', { name: 'mt-b', stateDir: 'b', tls, volumes: [{ id: 'v', replica: 'b.img', processServers: ['p'] }] });
  const out = path.join(dir, 'out2');
  await serviceUnitsCommand({ out, configs: [mtA, mtB], installDir: ROOT, nodePath: process.execPath });
  t.strictSame(fs.readdirSync(out).sort(), ['install-master-target-mt-a.ps1', 'install-master-target-mt-b.ps1', 'tidemark-master-target@mt-a.service', 'tidemark-master-target@mt-b.service']);
  for (const n of ['mt-a', 'mt-b']) {
    const v = verify(path.join(out, `tidemark-master-target@${n}.service`));
    t.equal(v.status, 0, `${n}: verify exits 0`);
    t.equal(v.problems, '', `${n}: no warning`);
  }
  const clash = await serviceUnitsCommand({ out: path.join(dir, 'out3'), configs: [mtA, mtA] }).catch((e: { code?: string; message?: string }) => e);
  t.match(clash, { code: 'TM_ERR_USAGE', message: /two master-target configs are both named "mt-a"/ }, 'two configs with one name: refused');
  t.match(await serviceUnitsCommand({ configs: [mtA] }).catch((e: unknown) => e), { code: 'TM_ERR_USAGE' }, 'no --out: usage error');
  t.match(await serviceUnitsCommand({ out, configs: [mtA], role: 'master-targt' }).catch((e: unknown) => e), { code: 'TM_ERR_USAGE', message: /did you mean "master-target"/ }, 'a mistyped --role: did you mean');
});

/** `systemd-analyze security --offline=true`: the unit's overall exposure (0 best .. 10 worst). */
function exposure(unitFile: string): number {
  const r = spawnSync(ANALYZE!, ['security', '--offline=true', '--no-pager', unitFile], { encoding: 'utf8' });
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(`${r.stdout}${r.stderr}`);
  if (!m) throw new Error(`systemd-analyze security said: ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

t.test('systemd-analyze security: process server and master target <= 2.5, agent <= 4.5; every relaxation says why', async (t) => {
  const cases: Array<[string, ServiceOptions['role'], unknown, number]> = [
    ['process server', 'process-server', { name: 'ps', cacheDir: '/var/lib/tidemark/ps', tls, masterTargets: [{ name: 'mt', port: 7420 }], volumes: [{ id: 'v', agent: 'a', masterTarget: 'mt' }] }, 2.5],
    ['process server on port 443', 'process-server', { name: 'ps', cacheDir: '/var/lib/tidemark/ps', tls, listen: { host: '0.0.0.0', port: 443 }, masterTargets: [{ name: 'mt', port: 7420 }], volumes: [{ id: 'v', agent: 'a', masterTarget: 'mt' }] }, 2.5],
    ['master target', 'master-target', { name: 'mt', stateDir: '/var/lib/tidemark/mt', tls, volumes: [{ id: 'v', replica: '/dev/sdc', processServers: ['ps'] }, { id: 'w', replica: '/srv/replicas/w.img', processServers: ['ps'], snapshots: { dir: '/srv/snaps', keep: 3 } }] }, 2.5],
    ['agent (blocktrace, reflink)', 'agent', { name: 'a', stateDir: '/var/lib/tidemark/agent', tls, processServer: { name: 'ps', host: '10.0.0.1' }, volumes: [{ id: 'v', path: '/dev/sdb', tracker: 'blocktrace' }, { id: 'w', path: '/srv/vm/w.img', capture: 'reflink' }] }, 4.5],
    ['agent with freeze scripts', 'agent', { name: 'a', stateDir: '/var/lib/tidemark/agent', tls, processServer: { name: 'ps', host: '10.0.0.1' }, volumes: [{ id: 'v', path: '/dev/sdb', capture: 'freeze', freeze: { mountpoint: '/srv/db', pre: '/usr/local/bin/checkpoint', post: '/usr/local/bin/resume' } }] }, 4.5],
  ];
  for (const [what, role, config, most] of cases) {
    const file = path.join(dir, `score-${what.replace(/\W+/g, '-')}.service`);
    const unit = systemdUnit({ role, configPath: '/etc/tidemark/x.json', config, installDir: path.dirname(path.dirname(path.dirname(BIN))), nodePath: process.execPath });
    fs.writeFileSync(file, unit);
    const score = exposure(file);
    t.ok(score <= most, `${what}: exposure ${score} <= ${most}`);
    // A directive left weaker than it could be is announced by a RELAXED comment right above it (or in its place).
    const lines = unit.split('\n');
    for (const [i, l] of lines.entries()) {
      const weak = /^(ProtectSystem=full|ProtectHome=read-only|PrivateTmp=no|PrivateDevices=no|MemoryDenyWriteExecute=no)$/.test(l) || (/^CapabilityBoundingSet=\S/.test(l));
      if (weak) t.match(lines[i - 1], /^# (RELAXED|.*\bRELAXED\b|No capabilities)/, `${what}: ${l} says why`);
    }
  }
});
