// A real one-node OpenStack Swift with its S3 API (s3api) on loopback, in a temp folder, for the bucket
// tier's tests and its benchmark. Four servers (proxy, account, container, object) started directly with
// /usr/bin/python3 through a small launcher that points Swift at a private swift.conf (Swift 2.30 reads
// /etc/swift/swift.conf otherwise); one-node rings built by one python process; stopped by PID.
// docs/OPERATIONS.md "Object store" and /work notes describe the pipeline this follows. When memcached is
// installed (Debian's memcached) one is started on a free port for the proxy's cache: Swift's own API
// (tempauth tokens, so the `swift` tool of python3-swiftclient) needs it; the S3 API works without.
import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../lab/lab.js';

const execFileP = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const SERVERS = ['account', 'container', 'object', 'proxy'] as const;
type Server = (typeof SERVERS)[number];
const MEMCACHED = '/usr/bin/memcached';

export const SWIFT_ACCESS_KEY = 'test:tester';
export const SWIFT_SECRET_KEY = 'testing';

/** Is Swift installed here (the Debian packages swift-proxy, swift-object, ...)? */
export function swiftAvailable(): boolean {
  return existsSync('/usr/bin/swift-proxy-server') && existsSync('/usr/bin/swift-object-server') && existsSync(PYTHON);
}

// PR_SET_PDEATHSIG: a test process that dies without stopping the store takes its servers with it.
const LAUNCHER = `
import ctypes, signal, sys
ctypes.CDLL('libc.so.6').prctl(1, signal.SIGTERM)
from swift.common import utils
utils.set_swift_dir(sys.argv[1])
from swift.common import constraints
constraints.reload_constraints()
from swift.common.wsgi import run_wsgi
sys.exit(run_wsgi(sys.argv[3], sys.argv[2] + '-server', verbose=True))
`;

const RINGS = `
import sys
from swift.common.ring import RingBuilder
d = sys.argv[1]
for name, port in zip(('account', 'container', 'object'), sys.argv[2:5]):
    b = RingBuilder(6, 1, 1)
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'd1', 'weight': 100, 'meta': ''})
    b.rebalance()
    b.get_ring().save('%s/%s.ring.gz' % (d, name))
`;

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

function serverConf(name: Server, dir: string, port: number, memcachePort: number | null): string {
  const common = `[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = ${port}\nworkers = 0\nmount_check = false\ndevices = ${dir}/srv\nswift_dir = ${dir}/etc\nlog_level = WARNING\n\n`;
  if (name !== 'proxy') return `${common}[pipeline:main]\npipeline = ${name}-server\n\n[app:${name}-server]\nuse = egg:swift#${name}\n`;
  const filters = ['catch_errors', 'gatekeeper', 'healthcheck', 'proxy-logging', 'listing_formats', 'copy', 'slo', 'dlo'];
  return `${common}[pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server\n\n`
    + `[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n`
    + `[filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = testing .admin\n\n`
    + `[filter:s3api]\nuse = egg:swift#s3api\nlocation = us-east-1\n\n`
    // tempauth needs the filter; with no memcached the S3 API works, uncached, and Swift's own API does not.
    + `[filter:cache]\nuse = egg:swift#memcache\n${memcachePort ? `memcache_servers = 127.0.0.1:${memcachePort}\n` : ''}\n`
    + filters.map((f) => `[filter:${f}]\nuse = egg:swift#${f.replace('-', '_')}\n`).join('\n');
}

export class SwiftStore {
  private readonly procs = new Map<Server, ChildProcess>();
  private readonly ports = new Map<Server, number>();
  private memcached: ChildProcess | null = null;
  private memcachePort: number | null = null;

  private constructor(readonly dir: string) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.ports.get('proxy')}`;
  }

  /** Configure a fresh store in `dir` (created) and start it. */
  static async start(dir: string): Promise<SwiftStore> {
    const s = new SwiftStore(dir);
    await fsp.mkdir(path.join(dir, 'etc'), { recursive: true });
    await fsp.mkdir(path.join(dir, 'srv', 'd1'), { recursive: true });
    for (const n of SERVERS) s.ports.set(n, await freePort());
    if (existsSync(MEMCACHED)) {
      s.memcachePort = await freePort();
      // Through python for PR_SET_PDEATHSIG (kept across exec; `-u root` keeps the credentials that keep it).
      const exec = "import ctypes, os, signal, sys; ctypes.CDLL('libc.so.6').prctl(1, signal.SIGTERM); os.execv(sys.argv[1], sys.argv[1:])";
      s.memcached = spawn(PYTHON, ['-c', exec, MEMCACHED, '-l', '127.0.0.1', '-p', String(s.memcachePort), '-U', '0', '-m', '64', '-u', 'root'], { stdio: 'ignore' });
      const mcPort = s.memcachePort;
      const deadline = Date.now() + 10_000;
      while (!(await canConnect(mcPort))) {
        if (Date.now() > deadline) throw new Error('memcached did not listen within 10 s');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    await fsp.writeFile(path.join(dir, 'etc', 'swift.conf'), '[swift-hash]\nswift_hash_path_suffix = tidemark-test\nswift_hash_path_prefix = tidemark\n\n[storage-policy:0]\nname = one\ndefault = yes\n');
    for (const n of SERVERS) await fsp.writeFile(path.join(dir, 'etc', `${n}-server.conf`), serverConf(n, dir, s.ports.get(n)!, s.memcachePort));
    await fsp.writeFile(path.join(dir, 'etc', 'launch.py'), LAUNCHER);
    await fsp.writeFile(path.join(dir, 'etc', 'rings.py'), RINGS);
    await execFileP(PYTHON, [path.join(dir, 'etc', 'rings.py'), path.join(dir, 'etc'), ...(['account', 'container', 'object'] as const).map((n) => String(s.ports.get(n)))]);
    await s.startServers();
    return s;
  }

  /** Start the servers (again, after stop()); resolves once the proxy answers its health check. */
  async startServers(which: readonly Server[] = SERVERS): Promise<void> {
    for (const n of which) {
      if (this.procs.has(n)) continue;
      // Straight into a file: a server whose log pipe fills (a busy reader) blocks in write and stops serving.
      const log = openSync(path.join(this.dir, `${n}.log`), 'a');
      const p = spawn(PYTHON, [path.join(this.dir, 'etc', 'launch.py'), path.join(this.dir, 'etc'), n, path.join(this.dir, 'etc', `${n}-server.conf`)], { stdio: ['ignore', log, log] });
      closeSync(log);
      this.procs.set(n, p);
      p.once('exit', () => { if (this.procs.get(n) === p) this.procs.delete(n); });
    }
    const deadline = Date.now() + 60_000;
    for (const n of which) {
      while (!(await canConnect(this.ports.get(n)!))) {
        if (!this.procs.has(n)) throw new Error(`swift ${n} server exited at start; see ${path.join(this.dir, `${n}.log`)}`);
        if (Date.now() > deadline) throw new Error(`swift ${n} server did not listen within 60 s; see ${path.join(this.dir, `${n}.log`)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (which.includes('proxy')) {
      while ((await fetch(`${this.endpoint}/healthcheck`).then((r) => r.status, () => 0)) !== 200) {
        if (Date.now() > deadline) throw new Error('swift proxy did not become healthy within 60 s');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Stop servers by PID (SIGTERM, then SIGKILL after 10 s), waiting for each to exit. */
  async stop(which: readonly Server[] = SERVERS): Promise<void> {
    await Promise.all(which.map(async (n) => {
      const p = this.procs.get(n);
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
      this.procs.delete(n);
    }));
  }

  /** Swift's own API (tempauth) works: the `swift` tool can be used (needs memcached). */
  get nativeApi(): boolean {
    return this.memcached !== null;
  }

  /** Stop everything and remove the folder. */
  async destroy(): Promise<void> {
    await this.stop();
    const mc = this.memcached;
    if (mc && mc.exitCode === null && mc.signalCode === null) {
      const exited = new Promise<void>((r) => mc.once('exit', () => r()));
      mc.kill('SIGTERM');
      await exited;
    }
    this.memcached = null;
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}
