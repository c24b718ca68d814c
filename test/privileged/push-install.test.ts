// Push install onto a second "machine": a network namespace reached over a veth pair, with a real
// OpenSSH sshd of its own (host key, config, port) running in a private mount namespace whose /opt and
// /run are fresh tmpfs, so nothing lands in this host's /opt. The process server and master target run
// here; the agent that push-install starts over there must connect back and replicate an image.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab, freePort, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, sha256, sleep } from '../integration/helpers.js';
import { privileged, run, tempDir } from './require-root.js';
import { Rng } from '../seed.js';

const rng = new Rng('push-install');

interface Result { code: number; stdout: string; stderr: string }

function tidemark(args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, ...args], { timeout: 240_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

function quiet(fn: () => unknown): void {
  try {
    fn();
  } catch {
    // already gone
  }
}

/** True while `pid` is a live process whose command line names `entry`. */
function isAgent(pid: number, entry: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(entry);
  } catch {
    return false;
  }
}

async function until(what: string, ms: number, ok: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(250);
  }
}

const sameBytes = async (a: string, b: string): Promise<boolean> => {
  try {
    return (await sha256(a)) === (await sha256(b));
  } catch {
    return false; // the replica is not created yet
  }
};

t.test('push-install over SSH: host key checked, installed, replicating, upgraded, uninstalled', async (t) => {
  if (!privileged(t, ['ip', 'unshare', 'sshd', 'ssh', 'ssh-keygen', 'setsid', 'tar', 'sha256sum'])) return;
  const hostOptBefore = fs.existsSync('/opt/tidemark');
  const dir = tempDir(t);
  fs.chmodSync(dir, 0o755);

  // The second machine's network: 10.231.<n>.1 here, .2 in the namespace.
  const n = rng.int(1, 250);
  const tag = `${process.pid % 100000}`;
  const ns = `tm-push-${tag}`;
  const [here, there] = [`10.231.${n}.1`, `10.231.${n}.2`];
  const vethHere = `tmpu${tag}a`;
  run('ip', 'netns', 'add', ns);
  t.teardown(() => {
    quiet(() => run('ip', 'link', 'del', vethHere));
    quiet(() => run('ip', 'netns', 'del', ns));
  });
  run('ip', 'link', 'add', vethHere, 'type', 'veth', 'peer', 'name', `tmpu${tag}b`, 'netns', ns);
  run('ip', 'addr', 'add', `${here}/30`, 'dev', vethHere);
  run('ip', 'link', 'set', vethHere, 'up');
  run('ip', '-n', ns, 'addr', 'add', `${there}/30`, 'dev', `tmpu${tag}b`);
  run('ip', '-n', ns, 'link', 'set', `tmpu${tag}b`, 'up');
  // The agent's status port listens on its loopback.
  run('ip', '-n', ns, 'link', 'set', 'lo', 'up');

  // Keys: the machine's host key, a different key for the wrong known_hosts, the operator's client key.
  const key = (name: string): string => {
    const f = path.join(dir, name);
    run('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', f);
    return f;
  };
  const [hostKey, wrongKey, clientKey] = [key('host_key'), key('wrong_key'), key('client_key')];
  const port = 2222;
  const entry = `[${there}]:${port}`;
  const pub = (f: string): string => fs.readFileSync(`${f}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
  const knownHosts = path.join(dir, 'known_hosts');
  const wrongKnownHosts = path.join(dir, 'known_hosts.wrong');
  fs.writeFileSync(knownHosts, `${entry} ${pub(hostKey)}\n`);
  fs.writeFileSync(wrongKnownHosts, `${entry} ${pub(wrongKey)}\n`);
  fs.copyFileSync(`${clientKey}.pub`, path.join(dir, 'authorized_keys'));
  const sshdConfig = path.join(dir, 'sshd_config');
  fs.writeFileSync(sshdConfig, [
    `Port ${port}`, `ListenAddress ${there}`, `HostKey ${hostKey}`, `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`, 'PermitRootLogin prohibit-password',
    'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', 'PrintMotd no', '',
  ].join('\n'));

  // sshd in the namespace, with a private /opt (where the agent goes) and /run (its privilege separation dir).
  const sshdLog: string[] = [];
  const sshd: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c',
    'mount -t tmpfs -o mode=0755 tm-push-opt /opt && mount -t tmpfs -o mode=0755 tm-push-run /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$0"',
    sshdConfig], { stdio: ['ignore', 'pipe', 'pipe'] });
  sshd.stdout!.on('data', (c: Buffer) => sshdLog.push(c.toString()));
  sshd.stderr!.on('data', (c: Buffer) => sshdLog.push(c.toString()));
  const sshdGone = new Promise<void>((resolve) => sshd.once('exit', () => resolve()));
  t.teardown(async () => {
    sshd.kill('SIGTERM');
    await Promise.race([sshdGone, sleep(5000)]);
  });
  // The machine's files as that machine sees them: through sshd's mount namespace.
  const remote = (p: string): string => `/proc/${sshd.pid}/root${p}`;
  const prefix = '/opt/tidemark';
  const agentEntry = `${prefix}/app/dist/cli/tidemark.js`;
  const agentPid = (): number => Number(fs.readFileSync(remote(`${prefix}/run/agent.pid`), 'utf8'));
  // Teardowns run last-registered first: the agent goes before sshd and the namespace.
  t.teardown(() => {
    quiet(() => {
      const pid = agentPid();
      if (isAgent(pid, agentEntry)) process.kill(pid, 'SIGKILL');
    });
  });
  await until('sshd listening', 10_000, () => sshdLog.join('').includes('Server listening') || sshd.exitCode !== null);
  t.equal(sshd.exitCode, null, `sshd runs in ${ns}`);
  t.same(fs.readdirSync(remote('/opt')), [], 'the machine starts with an empty /opt of its own');

  // Process server (listening on the veth address) and master target here.
  const src = path.join(dir, 'src.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(src, 8, 4);
  const lab = await Lab.create({
    dir: path.join(dir, 'lab'),
    volumes: [{ id: 'vol1', source: src, replica }],
    ps: { listen: { host: here, port: await freePort() } },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  await until('process server up', 20_000, async () => (await lab.status('ps')) !== null);

  const nodeDir = path.dirname(process.execPath);
  const ssh = ['--host', there, '--ssh-port', String(port), '--identity', clientKey, '--known-hosts', knownHosts,
    // Found on the machine's PATH as usual, unless this node lives elsewhere (say, a version manager).
    ...(['/usr/bin', '/usr/local/bin', '/bin'].includes(nodeDir) ? [] : ['--node', process.execPath])];
  const installArgs = ['--ps-config', lab.configs.ps, '--pki', path.join(lab.opts.dir, 'pki'), '--name', 'agent-1',
    '--volume', `id=vol1,path=${src},tracker=scan`, '--timeout', '90'];
  const diag = (r: Result): string => `${r.stdout}\n${r.stderr}\nsshd: ${sshdLog.join('').slice(-2000)}`;

  await t.test('a wrong host key is refused and nothing is installed', async (t) => {
    const wrong = ssh.map((a) => (a === knownHosts ? wrongKnownHosts : a));
    const r = await tidemark(['push-install', ...wrong, ...installArgs]);
    t.equal(r.code, 1, 'exit status 1');
    t.match(r.stderr, /TM_ERR_HOST_KEY/, 'the error is TM_ERR_HOST_KEY');
    t.match(r.stderr, /nothing was changed/, 'and says nothing was changed');
    t.same(fs.readdirSync(remote('/opt')), [], 'nothing was created on the machine');
  });

  await t.test('bad input is refused before anything is changed', async (t) => {
    const missing = path.join(dir, 'no-such.img');
    let r = await tidemark(['push-install', ...ssh, ...installArgs.map((a) => (a.startsWith('id=vol1,') ? `id=vol1,path=${missing}` : a))]);
    t.equal(r.code, 1, 'a volume path missing on the machine: exit status 1');
    t.match(r.stderr, /TM_ERR_PUSH_INSTALL: .*prerequisites: nothing was changed/, 'refused at the prerequisites');
    t.match(r.stderr, `volume path ${missing} does not exist`, 'naming the path');
    r = await tidemark(['push-install', ...ssh, ...installArgs.map((a) => (a.startsWith('id=vol1,') ? `id=vol2,path=${src}` : a))]);
    t.equal(r.code, 1, 'a volume the process server does not route from this agent: exit status 1');
    t.match(r.stderr, /process server routing/, 'refused for the routing');
    t.match(r.stderr, '{ "id": "vol2", "agent": "agent-1", "masterTarget": "mt-1" }', 'with the entry to add to ps.json');
    t.same(fs.readdirSync(remote('/opt')), [], 'nothing was created on the machine');
    // An empty prefix made in advance by another user, who could then replace the code root runs.
    fs.mkdirSync(remote(prefix), { mode: 0o755 });
    fs.chownSync(remote(prefix), 65534, 65534);
    r = await tidemark(['push-install', ...ssh, ...installArgs]);
    t.equal(r.code, 1, 'a prefix owned by another user: exit status 1');
    t.match(r.stderr, new RegExp(`prerequisites: nothing was changed:[^]*${prefix} is owned by uid 65534, not root`), 'refused at the prerequisites, naming the owner');
    t.same(fs.readdirSync(remote(prefix)), [], 'nothing was written into it');
    fs.rmdirSync(remote(prefix));
  });

  await t.test('an agent that cannot connect: a clear error with its log tail; uninstall removes it', async (t) => {
    const r = await tidemark(['push-install', ...ssh, ...installArgs.map((a) => (a === '90' ? '5' : a)), '--ps-address', `${here}:1`]);
    t.equal(r.code, 1, 'exit status 1');
    t.match(r.stderr, /TM_ERR_PUSH_INSTALL: .*wait for the agent: not connected after 5 s: the agent is not connected/, 'it says the agent did not connect');
    t.match(r.stderr, `Last lines of ${prefix}/log/agent.log:`, "and shows the agent's log");
    t.match(r.stderr, /"name":"agent agent-1"/, 'with the lines the agent wrote');
    const u = await tidemark(['push-install', ...ssh, '--uninstall']);
    t.equal(u.code, 0, 'push-install --uninstall succeeds');
    if (u.code !== 0) t.comment(diag(u));
    t.same(fs.readdirSync(remote('/opt')), [], 'and leaves nothing on the machine');
  });

  let firstPid = 0;
  let firstBuild = '';
  await t.test('install: the agent starts without systemd, connects back and replicates', async (t) => {
    const r = await tidemark(['push-install', ...ssh, ...installArgs]);
    t.equal(r.code, 0, 'push-install succeeds');
    if (r.code !== 0) t.comment(diag(r));
    t.match(r.stdout, /systemd is not PID 1/, 'it says systemd is not PID 1');
    t.match(r.stdout, /started the agent directly \(pid \d+\), not under systemd/, 'and that it started the agent directly');
    t.match(r.stdout, /agent agent-1 \(pid \d+\) is connected to process server ps-1: installed/, 'it waited for the agent to connect');
    const cfg = JSON.parse(fs.readFileSync(remote(`${prefix}/etc/agent.json`), 'utf8')) as { processServer: { host: string }; volumes: { id: string; path: string; tracker: string }[] };
    t.same(cfg.processServer.host, here, 'the agent config names the process server address');
    t.same(cfg.volumes, [{ id: 'vol1', path: src, tracker: 'scan' }], 'and the volume from --volume');
    t.equal(fs.statSync(remote(`${prefix}/etc/pki/agent-1.key`)).mode & 0o777, 0o600, 'the agent key is private');
    t.equal(fs.statSync(remote(`${prefix}/log/agent.log`)).mode & 0o777, 0o600, 'the directly started agent\'s log is private');
    firstPid = agentPid();
    t.ok(isAgent(firstPid, agentEntry), `the agent runs from ${agentEntry} (pid ${firstPid})`);
    firstBuild = fs.readFileSync(remote(`${prefix}/app/tidemark-package.json`), 'utf8');
    await until('replica equals source', 90_000, () => sameBytes(src, replica));
    t.equal(await sha256(replica), await sha256(src), 'the replica has the source bytes');
  });

  await t.test('upgrade: new package, agent restarted, replication goes on', async (t) => {
    const fh = await fs.promises.open(src, 'r+');
    await fh.write(rng.bytes(65536), 0, 65536, 1 << 20);
    const r = await tidemark(['push-install', ...ssh, '--upgrade', '--ps-config', lab.configs.ps, '--timeout', '90']);
    t.equal(r.code, 0, 'push-install --upgrade succeeds');
    if (r.code !== 0) t.comment(diag(r));
    t.match(r.stdout, new RegExp(`stopped the agent \\(pid ${firstPid}\\)`), 'the old agent was stopped');
    t.match(r.stdout, /upgraded \(config, certificate and state kept\)/, 'and the new one connected');
    const pid = agentPid();
    t.not(pid, firstPid, 'a new agent process');
    t.notOk(isAgent(firstPid, agentEntry), 'the old one is gone');
    t.not(fs.readFileSync(remote(`${prefix}/app/tidemark-package.json`), 'utf8'), firstBuild, 'the package was replaced');
    t.notOk(fs.existsSync(remote(`${prefix}/app.old`)), 'the previous package was removed after the reconnect');
    // Written while the new agent runs: only it can carry this.
    await fh.write(rng.bytes(131072), 0, 131072, 6 << 20);
    await fh.close();
    await until('replica equals source after the upgrade', 90_000, () => sameBytes(src, replica));
    t.equal(await sha256(replica), await sha256(src), 'the replica has the source bytes, written before and after the upgrade');
  });

  await t.test('uninstall: agent stopped, files removed', async (t) => {
    const pid = agentPid();
    const r = await tidemark(['push-install', ...ssh, '--uninstall']);
    t.equal(r.code, 0, 'push-install --uninstall succeeds');
    if (r.code !== 0) t.comment(diag(r));
    t.match(r.stdout, new RegExp(`stopped the agent \\(pid ${pid}\\)`), 'it says it stopped the agent');
    t.notOk(isAgent(pid, agentEntry), 'the agent process is gone');
    t.notOk(fs.existsSync(remote(prefix)), `${prefix} is gone from the machine`);
    t.same(fs.readdirSync(remote('/opt')), [], "the machine's /opt is empty again");
  });

  t.equal(fs.existsSync('/opt/tidemark'), hostOptBefore, "nothing was installed in this host's /opt");
});
