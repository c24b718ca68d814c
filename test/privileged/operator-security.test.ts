// Operator actions and recovery outputs (issue 12 item 1, issue 15 part A, issue 11 item 7), against
// real daemons: an unprivileged local user (runuser -u nobody) and a web page cannot act through the
// status port or the operator socket; every volume and output is checked; a recovery never lands on a
// replica, a protected source, a path outside the recovery roots or a mounted device, whatever --force
// says; one daemon per state folder; offline commands decide by the state lock, not by a status port.
// Every refusal is checked to have changed nothing on disk.
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs, { promises as fsp } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { operatorRequest, OPERATOR_SOCKET } from '../../common/operator-socket.js';
import { lockStateDir } from '../../common/state-lock.js';
import { STATUS_PORT_FILE } from '../../common/status-server.js';
import { makeImage, startWriter } from '../integration/helpers.js';
import { sha256 } from './protected.js';
import { attachLoop, makeExt4, makeXfs, privileged, run, tempDir } from './require-root.js';

const execFileP = promisify(execFile);
const SIZE_MIB = 16;

interface Result { code: number; out: string; err: string }

async function tm(lab: Lab, ...args: string[]): Promise<Result> {
  return execFileP(process.execPath, [TIDEMARK_BIN, ...args], { cwd: lab.opts.dir, maxBuffer: 16 << 20 }).then(
    (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
  );
}

/**
 * HTTP requests made by `nobody` (a separate process under runuser): each is [method, url or socket path,
 * request path, headers]; the answers (status and body, or the connection error's code) come back in order.
 */
function asNobody(requests: Array<{ method: string; port?: number; socketPath?: string; path: string; headers?: Record<string, string> }>): Array<{ status: number; body: string } | { error: string }> {
  const script = `
    const http = require('node:http');
    const reqs = JSON.parse(process.env.REQS);
    (async () => {
      const out = [];
      for (const r of reqs) {
        out.push(await new Promise((resolve) => {
          const req = http.request({ host: '127.0.0.1', port: r.port, socketPath: r.socketPath, path: r.path, method: r.method, headers: r.headers }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode, body }));
          });
          req.on('error', (e) => resolve({ error: e.code || e.message }));
          req.end();
        }));
      }
      process.stdout.write(JSON.stringify(out));
    })();`;
  // Only PATH and the requests: the test runner's NODE_OPTIONS load its hooks from node_modules, which
  // `nobody` may not be able to read (a checkout under a private mktemp folder). The runner adds them to
  // every child's environment itself, so `env -u` removes them once the child runs as nobody.
  const r = spawnSync('runuser', ['-u', 'nobody', '--', 'env', '-u', 'NODE_OPTIONS', process.execPath, '-e', script], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', REQS: JSON.stringify(requests) }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`runuser failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Array<{ status: number; body: string } | { error: string }>;
}

async function statusPort(lab: Lab, name: 'agent' | 'mt'): Promise<number> {
  return Number(await fsp.readFile(path.join(lab.stateDirs[name], STATUS_PORT_FILE), 'utf8'));
}

interface Point { seq: number }

t.test('operator endpoints and recovery outputs refuse what could destroy data, and change nothing', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'runuser'])) return;
  const xfs = makeXfs(t, 400).mnt;
  const ext4 = makeExt4(t, 32); // a mounted filesystem on /dev/loopN, listed as a recovery device
  const spare = attachLoop(t, path.join((() => { const d = tempDir(t); fs.writeFileSync(path.join(d, 'spare.img'), ''); fs.truncateSync(path.join(d, 'spare.img'), 32 << 20); return d; })(), 'spare.img'));
  const source = path.join(xfs, 'source.img');
  const replica = path.join(xfs, 'replica.img');
  const clones = path.join(xfs, 'clones');
  await makeImage(source, SIZE_MIB, SIZE_MIB);
  const outside = tempDir(t);
  // A root-only file outside the recovery roots: what an attacker would like replaced.
  const victim = path.join(outside, 'victim.img');
  await fsp.writeFile(victim, randomBytes(1 << 20), { mode: 0o600 });
  const victimSha = await sha256(victim);
  const lab = await Lab.create({
    dir: tempDir(t),
    // The whole XFS is a recovery root: the replica and the protected source on it are refused by their
    // own guards (configuration, and the daemons' locks on their image files), not by the roots.
    recoveryRoots: [xfs],
    volumes: [{ id: 'vol1', source, replica, agent: { capture: 'reflink', reflink: { dir: clones, keep: 1000 } }, mt: { retention: { window: '1h' } } }],
    agent: { cycleIntervalMs: 300 },
    mt: { recovery: { roots: [xfs], devices: [ext4.dev] } },
  });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  const writer = startWriter(source, SIZE_MIB << 20, 30);
  await new Promise((r) => setTimeout(r, 3000));
  await writer.stop();
  await lab.waitConverged(Date.now(), 90_000);
  const clonePath = (seq: number): string => path.join(clones, `vol1-${String(seq).padStart(10, '0')}.img`);
  const points = async (): Promise<Point[]> => {
    const r = await tm(lab, 'points', 'vol1', '--json', '--config', lab.configs.mt);
    if (r.code !== 0) throw new Error(`points: ${r.err}`);
    return (JSON.parse(r.out) as { points: Point[] }).points;
  };
  let pts = await points();
  for (let i = 0; pts.length === 0 && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 200));
    pts = await points();
  }
  t.ok(pts.length > 0, `recovery points retained (${pts.length})`);
  const point = pts.at(-1)!;
  const mtSocket = path.join(lab.stateDirs.mt, OPERATOR_SOCKET);

  await t.test('an unprivileged user and a web page cannot act; status stays readable to a plain client', async (t) => {
    const mtPort = await statusPort(lab, 'mt');
    const agentPort = await statusPort(lab, 'agent');
    // A record an attacker wrote, naming a file for root to delete (test-failover-cleanup by path).
    const bait = path.join(outside, 'bait.img');
    await fsp.writeFile(bait, 'keep me');
    await fsp.writeFile(path.join(outside, 'evil.json'), JSON.stringify({ volume: 'x', image: bait, device: null }));
    const rel = path.relative(path.join(lab.stateDirs.mt, 'test-failover'), path.join(outside, 'evil'));
    const answers = asNobody([
      { method: 'POST', port: mtPort, path: `/recover?volume=vol1&latest=true&out=${encodeURIComponent(victim)}&force=true` },
      { method: 'POST', port: mtPort, path: `/test-failover-cleanup?volume=${encodeURIComponent(rel)}` },
      { method: 'POST', port: agentPort, path: '/drain?volume=vol1' },
      { method: 'POST', port: agentPort, path: '/resync?volume=vol1&mode=resync' },
      { method: 'GET', port: mtPort, path: '/status', headers: { origin: 'http://evil.example' } },
      { method: 'GET', port: mtPort, path: '/status', headers: { host: `evil.example:${mtPort}` } },
      { method: 'GET', port: mtPort, path: '/status' },
      { method: 'POST', socketPath: mtSocket, path: '/points?volume=vol1' },
    ]);
    for (const [i, what] of ['POST /recover', 'POST /test-failover-cleanup', 'agent POST /drain', 'agent POST /resync', 'GET /status with Origin', 'GET /status with a foreign Host'].entries()) {
      const a = answers[i] as { status: number; body: string };
      t.equal(a.status, 403, `${what}: refused with 403`);
      t.match(a.body, /TM_ERR_FORBIDDEN/, `${what}: TM_ERR_FORBIDDEN`);
    }
    t.equal((answers[6] as { status: number }).status, 200, 'a plain GET /status from a local user is answered');
    t.same(answers[7], { error: 'EACCES' }, 'the operator socket cannot even be opened by nobody (mode 0600, state folder 0700)');

    // Even with its permissions opened up by mistake, the socket checks the caller's uid (SO_PEERCRED).
    const modes = await Promise.all([lab.opts.dir, lab.stateDirs.mt, mtSocket].map(async (p) => (await fsp.stat(p)).mode & 0o777));
    await fsp.chmod(lab.opts.dir, 0o711);
    await fsp.chmod(lab.stateDirs.mt, 0o711);
    await fsp.chmod(mtSocket, 0o666);
    let viaSocket;
    try {
      viaSocket = asNobody([{ method: 'POST', socketPath: mtSocket, path: `/recover?volume=vol1&latest=true&out=${encodeURIComponent(victim)}&force=true` }]);
    } finally {
      await fsp.chmod(lab.opts.dir, modes[0]!);
      await fsp.chmod(lab.stateDirs.mt, modes[1]!);
      await fsp.chmod(mtSocket, modes[2]!);
    }
    t.equal((viaSocket[0] as { status: number }).status, 403, 'a world-writable socket still refuses nobody');
    t.match((viaSocket[0] as { body: string }).body, /TM_ERR_FORBIDDEN/);
    const refusedLog = (await lab.logLines('mt')).find((l) => l.msg === 'operator action refused: caller is not root or the daemon user');
    t.equal(refusedLog?.uid, 65534, 'the refusal is logged with the caller\'s uid');

    t.equal(await sha256(victim), victimSha, 'the root-only file is unchanged');
    t.equal(await fsp.readFile(bait, 'utf8'), 'keep me', 'the file the forged record named is still there');
    const av = ((await lab.status('agent'))?.volumes as Array<{ drained: unknown }>)[0]!;
    t.equal(av.drained, null, 'the agent was not drained');

    // Root over the socket: volume ids are checked against the configuration, never made into paths.
    const e = await operatorRequest(lab.stateDirs.mt, 'test-failover-cleanup', new URLSearchParams({ volume: rel })).catch((x: { code: string }) => x);
    t.equal((e as { code: string }).code, 'TM_ERR_UNKNOWN_VOLUME', 'root naming a path as a volume: TM_ERR_UNKNOWN_VOLUME');
    t.equal(await fsp.readFile(bait, 'utf8'), 'keep me', 'and the file is still there');
    const asked = (await lab.logLines('mt')).find((l) => l.msg === 'operator action' && l.action === 'test-failover-cleanup');
    t.equal(asked?.uid, 0, 'operator actions are logged with who asked (uid)');
    t.equal(typeof asked?.pid, 'number', 'and their pid');
  });

  await t.test('recovery outputs: roots, replicas, protected sources, devices', async (t) => {
    const refused = async (what: string, out: string, code: string, ...flags: string[]): Promise<void> => {
      const r = await tm(lab, 'recover', 'vol1', '--seq', String(point.seq), '--out', out, ...flags, '--config', lab.configs.mt);
      t.not(r.code, 0, `${what}: refused`);
      t.match(r.err, new RegExp(code), `${what}: ${code}`);
    };
    await refused('a root-owned file outside the recovery roots, with --force', victim, 'TM_ERR_OUTPUT_REFUSED', '--force');
    t.equal(await sha256(victim), victimSha, 'which is unchanged');

    const replicaSha = await sha256(replica);
    await refused('the master target\'s own replica, with --force', replica, 'TM_ERR_OUTPUT_REFUSED', '--force');
    const link = path.join(xfs, 'replica-link.img');
    await fsp.link(replica, link);
    await refused('a hard link to the replica, with --force', link, 'TM_ERR_OUTPUT_REFUSED', '--force');
    await fsp.rm(link);
    await refused('a file inside the state folder', path.join(lab.stateDirs.mt, 'x.img'), 'TM_ERR_OUTPUT_REFUSED');
    t.equal(await sha256(replica), replicaSha, 'the replica is unchanged');
    const sourceSha = await sha256(source);
    await refused('the source a running agent protects (inside a root), with --force', source, 'TM_ERR_OUTPUT_REFUSED', '--force');
    t.equal(await sha256(source), sourceSha, 'the source is unchanged');

    // Devices: only with --device, only listed ones, never a mounted one.
    await fsp.writeFile(path.join(ext4.mnt, 'data.txt'), 'still here');
    run('sync');
    await refused('a block device without --device', ext4.dev, 'TM_ERR_USAGE');
    await refused('a mounted block device, even listed and with --device --force', ext4.dev, 'TM_ERR_OUTPUT_REFUSED', '--device', '--force');
    await refused('a block device not listed in recovery.devices', spare, 'TM_ERR_OUTPUT_REFUSED', '--device');
    run('umount', ext4.mnt);
    const mnt2 = fs.mkdtempSync(path.join(outside, 'mnt-'));
    run('mount', ext4.dev, mnt2);
    t.equal(await fsp.readFile(path.join(mnt2, 'data.txt'), 'utf8'), 'still here', 'the mounted filesystem was not touched');
    run('umount', mnt2);

    // What is allowed still works, exactly: a file under a root, and the listed device once unmounted.
    const ok = path.join(xfs, 'recovered.img');
    const r = await tm(lab, 'recover', 'vol1', '--seq', String(point.seq), '--out', ok, '--config', lab.configs.mt);
    t.equal(r.code, 0, `recover into a root works ${r.err}`);
    t.equal(await sha256(ok), await sha256(clonePath(point.seq)), 'and equals the source at that point');
    const d = await tm(lab, 'recover', 'vol1', '--seq', String(point.seq), '--out', ext4.dev, '--device', '--config', lab.configs.mt);
    t.equal(d.code, 0, `recover onto the listed device, unmounted, with --device works ${d.err}`);
    const head = Buffer.alloc(SIZE_MIB << 20);
    const fh = await fsp.open(ext4.dev, 'r');
    await fh.read(head, 0, head.length, 0);
    await fh.close();
    t.ok(head.equals(await fsp.readFile(clonePath(point.seq))), 'and the device holds the point');

    await lab.waitConverged(Date.now(), 60_000);
    t.equal(await sha256(replica), await sha256(source), 'replication goes on: the replica equals the source');
  });

  await t.test('one daemon per state folder; offline commands use the lock, not the status port', async (t) => {
    // A second agent on the first one's state folder.
    const second = path.join(lab.opts.dir, 'agent-2.json');
    await fsp.writeFile(second, await fsp.readFile(lab.configs.agent));
    const agentPid = lab.procs.get('agent')!.pid!;
    const child = lab.spawn(['agent', '--config', second], 'agent-2');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    t.equal(code, 2, 'the second agent does not start');
    const fatal = (await lab.logLines('agent-2')).find((l) => l.msg === 'could not start');
    t.equal(fatal?.code, 'TM_ERR_STATE_LOCKED', 'TM_ERR_STATE_LOCKED');
    t.match(String(fatal?.err), `pid ${agentPid}`, 'naming the running agent\'s pid');
    t.ok(await lab.status('agent'), 'the first agent still answers');
    t.ok(fs.existsSync(path.join(lab.stateDirs.agent, STATUS_PORT_FILE)), 'and its status-port file is still there');

    // The master target stopped, a stale status-port file naming a port some other program answers on.
    await lab.stop('agent');
    await lab.kill('mt');
    const impostor = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', r));
    t.teardown(() => impostor.close());
    await fsp.writeFile(path.join(lab.stateDirs.mt, STATUS_PORT_FILE), String((impostor.address() as AddressInfo).port));
    const out = path.join(xfs, 'offline.img');
    const r = await tm(lab, 'recover', 'vol1', '--seq', String(point.seq), '--out', out, '--config', lab.configs.mt);
    t.equal(r.code, 0, `offline recover works with a stale status port answering ${r.err}`);
    t.equal(await sha256(out), await sha256(clonePath(point.seq)), 'and recovers the point exactly');

    // While an offline command holds the state folder, the master target does not start on it.
    const held = await lockStateDir(lab.stateDirs.mt, 'this test');
    try {
      const mt = lab.start('mt');
      const exit = await new Promise<number | null>((resolve) => mt.once('exit', resolve));
      t.equal(exit, 2, 'the master target does not start while the state folder is held');
      const fatal2 = (await lab.logLines('mt')).filter((l) => l.msg === 'could not start').at(-1);
      t.match(String(fatal2?.err), `pid ${process.pid}`, 'and names the holder');
    } finally {
      await held.release();
    }
    lab.start('mt');
    const deadline = Date.now() + 30_000;
    while (!(await lab.status('mt')) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    t.ok(await lab.status('mt'), 'once released, the master target starts');
  });
});
