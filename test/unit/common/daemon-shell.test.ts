// The shell the three daemons share (issue 15 C5): a certificate for another role and a state folder in
// use are refused (and leave nothing held), the status and operator endpoints live in the state folder,
// and close stops in order, once: no operator action and no peer before the daemon's own stop, status
// and lock only after it.
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { DaemonShell } from '../../../common/daemon-shell.js';
import { silentLogger } from '../../../common/log.js';
import { operatorRequest, operatorSocketPath } from '../../../common/operator-socket.js';
import { trustPaths } from '../../../common/peer-trust.js';
import { initCa, issue } from '../../../common/pki.js';
import { STATUS_PORT_FILE } from '../../../common/status-server.js';

async function scratch(t: Test): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-shell-'));
  t.teardown(() => fsp.rm(d, { recursive: true, force: true }));
  return d;
}

const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-shell-ca-'));
t.teardown(() => fsp.rm(root, { recursive: true, force: true }));
const ca = path.join(root, 'ca');
await initCa(ca);
const agentCert = await issue(ca, 'agent', 'a1');
const psCert = await issue(ca, 'process-server', 'ps1');
const paths = (c: { certPath: string; keyPath: string; caPath: string }): ReturnType<typeof trustPaths> => trustPaths({ ca: c.caPath, cert: c.certPath, key: c.keyPath }, (x) => x);
const metrics = { contentType: 'text/plain', render: async () => '' };

function statusAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/status' }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
  });
}

function connects(port: number, c: { certPath: string; keyPath: string; caPath: string }): Promise<boolean> {
  return Promise.all([fsp.readFile(c.caPath), fsp.readFile(c.certPath), fsp.readFile(c.keyPath)]).then(([caPem, cert, key]) => new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: caPem, cert, key, servername: 'localhost', checkServerIdentity: () => undefined }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  }));
}

t.test('a certificate for another role is refused, and the folder is left free', async (t) => {
  const d = await scratch(t);
  const shell = new DaemonShell('agent', silentLogger());
  await t.rejects(shell.start({ trust: paths(psCert), certPath: psCert.certPath, stateDir: d }), { code: 'TM_ERR_PKI', message: /is for a process-server, not an agent/ });
  const other = new DaemonShell('agent', silentLogger());
  await other.start({ trust: paths(agentCert), certPath: agentCert.certPath, stateDir: d });
  t.pass('another daemon takes the folder');
  await other.close(async () => {});
  await shell.close(async () => {});
  t.pass('closing a shell whose start failed is safe');
});

t.test('a second daemon on one state folder is refused, naming the holder; free again after close', async (t) => {
  const d = await scratch(t);
  const first = new DaemonShell('process-server', silentLogger());
  await first.start({ trust: paths(psCert), certPath: psCert.certPath, stateDir: path.join(d, 'cache') });
  const second = new DaemonShell('process-server', silentLogger());
  await t.rejects(second.start({ trust: paths(psCert), certPath: psCert.certPath, stateDir: path.join(d, 'cache') }), { code: 'TM_ERR_STATE_LOCKED', message: new RegExp(`pid ${process.pid}\\b.*a process server needs it alone`) });
  await first.close(async () => {});
  const third = new DaemonShell('process-server', silentLogger());
  await third.start({ trust: paths(psCert), certPath: psCert.certPath, stateDir: path.join(d, 'cache') });
  await third.close(async () => {});
  await second.close(async () => {});
});

t.test('close: operators and peers stop first, the daemon\'s own stop next, status and lock last; once', async (t) => {
  const d = await scratch(t);
  const shell = new DaemonShell('process-server', silentLogger());
  await shell.start({ trust: paths(psCert), certPath: psCert.certPath, stateDir: d });
  let sessionsDestroyed = 0;
  const port = await shell.listen({
    listen: { host: '127.0.0.1', port: 0 }, connections: { handshakeTimeoutMs: 5000, max: 10, perAddress: 10 }, allowed: ['agent'],
    serve: (socket, peer) => {
      let end!: () => void;
      const done = new Promise<void>((r) => (end = r));
      socket.on('close', () => end());
      return { session: { peerLabel: peer.name, destroy: () => { sessionsDestroyed++; socket.destroy(); } }, done };
    },
  });
  const statusPort = await shell.serveStatus(0, () => ({ ok: true }), metrics);
  t.equal(Number(await fsp.readFile(path.join(d, STATUS_PORT_FILE), 'utf8')), statusPort, 'the status port is recorded in the state folder');
  await shell.serveOperators(async (action) => ({ did: action }), undefined, { status: () => ({ ok: true }), metrics });
  t.same(await operatorRequest(d, 'ping', new URLSearchParams()), { did: 'ping' }, 'operator actions through the socket in the state folder');
  t.ok(await connects(port, agentCert), 'an agent connects');
  // A session that stays: wait until the shell counts it.
  const [caPem, cert, key] = await Promise.all([fsp.readFile(agentCert.caPath), fsp.readFile(agentCert.certPath), fsp.readFile(agentCert.keyPath)]);
  const held = tls.connect({ host: '127.0.0.1', port, ca: caPem, cert, key, checkServerIdentity: () => undefined });
  held.on('error', () => {});
  while (shell.sessions.size === 0) await new Promise((r) => setTimeout(r, 10));
  t.equal([...shell.sessions][0]!.peerLabel, 'a1');

  const seen: Record<string, boolean> = {};
  let stops = 0;
  const stop = async (): Promise<void> => {
    stops++;
    seen.stopping = shell.stopping;
    seen.sessionsCut = sessionsDestroyed === 1;
    seen.newPeers = await connects(port, agentCert);
    seen.operator = await fsp.stat(operatorSocketPath(d)).then(() => true, () => false);
    seen.status = await statusAnswers(statusPort);
  };
  const a = shell.close(stop);
  const b = shell.close(stop);
  await Promise.all([a, b]);
  t.equal(stops, 1, 'the daemon\'s own stop runs once');
  t.same(seen, { stopping: true, sessionsCut: true, newPeers: false, operator: false, status: true }, 'during the stop: peers cut, no new ones, no operator socket, status still answering');
  t.notOk(await statusAnswers(statusPort), 'status closed after');
  t.notOk(await fsp.stat(path.join(d, STATUS_PORT_FILE)).then(() => true, () => false), 'and its port file gone');
  const next = new DaemonShell('process-server', silentLogger());
  await next.start({ trust: paths(psCert), certPath: psCert.certPath, stateDir: d });
  t.pass('the lock is released');
  await next.close(async () => {});
});

t.test('a failing stop still releases status and lock', async (t) => {
  const d = await scratch(t);
  const shell = new DaemonShell('agent', silentLogger());
  await shell.start({ trust: paths(agentCert), certPath: agentCert.certPath, stateDir: d });
  const statusPort = await shell.serveStatus(0, () => ({}), metrics);
  await t.rejects(shell.close(async () => { throw new Error('volume busy'); }), /volume busy/);
  t.notOk(await statusAnswers(statusPort));
  const next = new DaemonShell('agent', silentLogger());
  await next.start({ trust: paths(agentCert), certPath: agentCert.certPath, stateDir: d });
  await next.close(async () => {});
});
