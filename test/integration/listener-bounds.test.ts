// Anyone who can reach a daemon's port must not be able to hold its file descriptors or fill its log:
// unfinished handshakes are closed at their deadline, connections are capped, refusals are rate-limited
// and name the address they came from.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { initCa, issue } from '../../common/pki.js';
import { makeImage, scratchDir, sha256, waitFor } from './helpers.js';

const HANDSHAKE_MS = 5000;


function mtPort(cfg: string): Promise<number> {
  return fsp.readFile(cfg, 'utf8').then((s) => (JSON.parse(s) as { listen: { port: number } }).listen.port);
}

/** Open `n` TCP connections from `from`; resolves with them once all are connected or refused. */
async function openIdle(port: number, n: number, from: string): Promise<{ closed: () => number; sockets: net.Socket[] }> {
  let closed = 0;
  const sockets: net.Socket[] = [];
  await Promise.all(Array.from({ length: n }, () => new Promise<void>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress: from });
    sockets.push(s);
    s.on('error', () => {});
    s.once('close', () => { closed++; resolve(); });
    s.once('connect', () => resolve());
  })));
  return { closed: () => closed, sockets };
}

t.test('1000 idle connections are closed at the handshake deadline; status and a real peer keep working', async (t) => {
  const dir = await scratchDir(t, 'idle');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 16, 8);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 }, mt: { connections: { handshakeTimeoutMs: HANDSHAKE_MS } } });
  t.teardown(() => lab.stopAll());
  const mt = lab.start('mt');
  await waitFor(async () => (await lab.status('mt')) !== null, 15_000, 'master target up');
  // A low file limit, as on a small host: 1000 held connections would exhaust it.
  execFileSync('prlimit', ['--nofile=256:256', '--pid', String(mt.pid)]);
  const port = await mtPort(lab.configs.mt);

  const flood = await openIdle(port, 1000, '127.0.0.2');
  t.teardown(() => { for (const s of flood.sockets) s.destroy(); });
  const t0 = Date.now();
  // Past the per-address cap (128) the server closes them as they arrive, long before the deadline.
  await waitFor(async () => flood.closed() >= 1000 - 128, HANDSHAKE_MS - 2000, 'connections past the per-address cap closed');
  t.pass(`${flood.closed()} of 1000 closed within ${Date.now() - t0} ms (per-address cap)`);
  t.ok(await lab.status('mt'), '/status answers during the flood');
  // A real process server and agent replicate meanwhile (from another address).
  lab.start('ps');
  const since = Date.now();
  lab.start('agent');
  await lab.waitConverged(since, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'the real peers replicated, byte for byte');
  await waitFor(async () => flood.closed() === 1000, HANDSHAKE_MS + 20_000, 'every idle connection closed by the server');
  t.pass(`all 1000 closed by the server within ${Date.now() - t0} ms`);
  const refused = (await lab.logLines('mt')).filter((l) => l.msg === 'peer refused');
  t.ok(refused.length <= 40, `refusals are rate-limited in the log (${refused.length} lines for 1000 connections)`);
  t.ok(await lab.status('mt'), '/status still answers');
});

t.test('garbage and foreign certificates: refusals name the real address and do not flood the log', async (t) => {
  const dir = await scratchDir(t, 'garbage');
  const source = path.join(dir, 'source.img');
  await makeImage(source, 8, 1);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img') }] });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  await waitFor(async () => (await lab.status('mt')) !== null, 15_000, 'master target up');
  const port = await mtPort(lab.configs.mt);

  // A certificate from another CA: refused after the handshake, when Node has already torn the socket down.
  await initCa(path.join(dir, 'other'));
  const other = await issue(path.join(dir, 'other'), 'process-server', 'ps-1');
  const ca = await fsp.readFile(path.join(dir, 'pki', 'ca.crt'));
  const [cert, key] = [await fsp.readFile(other.certPath), await fsp.readFile(other.keyPath)];
  for (let i = 0; i < 3; i++) {
    await new Promise<void>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca, cert, key, checkServerIdentity: () => undefined });
      s.on('error', () => {});
      s.once('close', () => resolve());
    });
  }
  await waitFor(async () => (await lab.logLines('mt')).filter((l) => l.msg === 'peer refused').length >= 3, 10_000, 'three foreign certificates refused');
  for (const l of (await lab.logLines('mt')).filter((x) => x.msg === 'peer refused')) {
    t.match(String(l.peer), /^127\.0\.0\.1:\d+$/, `refusal names the peer's address (${String(l.peer)})`);
  }

  const N = 300;
  const garbage: net.Socket[] = [];
  t.teardown(() => { for (const s of garbage) s.destroy(); });
  let closed = 0;
  for (let i = 0; i < N; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    garbage.push(s);
    s.on('error', () => {});
    // Read what the server answers (some garbage gets a TLS alert): a paused socket holding unread bytes
    // never emits 'end' or 'close', though the server closed the connection.
    s.resume();
    s.once('connect', () => { const b = randomBytes(512); (s as unknown as { first?: number }).first = b[0]; s.write(b); });
    s.once('close', () => { closed++; });
  }
  await waitFor(async () => closed === N, 20_000, 'the server closes every garbage connection').catch((e: Error) => {
    const open = garbage.filter((x) => !x.destroyed && x.readyState !== 'closed');
    throw new Error(`${e.message}: ${open.map((x) => `${x.readyState} local ${x.localPort} written ${x.bytesWritten} read ${x.bytesRead} first ${(x as unknown as { first?: number }).first}`).join('; ')}`);
  });
  // Every refusal is accounted for: logged one by one up to the burst, the rest in summary lines.
  const accounted = async (): Promise<number> => {
    const lines = await lab.logLines('mt');
    return lines.filter((l) => l.msg === 'peer refused').length + lines.filter((l) => l.msg === 'more peers refused (not logged one by one)').reduce((s, l) => s + Number(l.suppressed), 0);
  };
  await waitFor(async () => (await accounted()) >= N + 3, 30_000, 'every refusal logged or summarised');
  const lines = await lab.logLines('mt');
  const single = lines.filter((l) => l.msg === 'peer refused');
  t.ok(single.length <= 20, `${N} garbage connections gave ${single.length} single refusal lines`);
  const summary = lines.find((l) => l.msg === 'more peers refused (not logged one by one)');
  t.match(summary, { addresses: ['127.0.0.1'] }, 'the summary names the addresses');
  t.same(single.filter((l) => /undefined/.test(String(l.peer))), [], 'no refusal is logged as undefined:undefined');
  const size = (await fsp.stat(path.join(dir, 'mt.log'))).size;
  t.ok(size < 64 * 1024, `log stays small (${size} bytes)`);
  t.ok(await lab.status('mt'), 'and the master target is fine');
});
