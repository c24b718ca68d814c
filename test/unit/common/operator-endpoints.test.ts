// The operator socket (caller identity from the kernel, 0600 from creation, errors with their codes),
// the read-only status port (Origin, foreign Host and writes refused) and the state-folder lock (a second
// holder refused, naming the first's pid). The refusal of another user is in
// test/privileged/operator-security.test.ts (it needs a second uid).
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { tmError } from '../../../common/errors.js';
import { silentLogger } from '../../../common/log.js';
import { operatorRequest, operatorSocketPath, startOperatorSocket } from '../../../common/operator-socket.js';
import { LOCK_FILE, lockStateDir } from '../../../common/state-lock.js';
import { startStatusServer } from '../../../common/status-server.js';

async function dir(t: Test): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-op-'));
  t.teardown(() => fsp.rm(d, { recursive: true, force: true }));
  return d;
}

function get(port: number, p: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method, headers }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('operator socket: 0600, the caller as the kernel sees it, errors with their codes', async (t) => {
  const d = await dir(t);
  const seen: Array<{ action: string; uid: number; pid: number; volume: string | null }> = [];
  const sock = await startOperatorSocket(d, async (action, params, caller) => {
    seen.push({ action, uid: caller.uid, pid: caller.pid, volume: params.get('volume') });
    if (action === 'fail') throw tmError('TM_ERR_UNKNOWN_VOLUME', 'no such volume');
    return { ok: true };
  }, silentLogger());
  t.teardown(() => sock.close());
  t.equal((await fsp.stat(sock.path)).mode & 0o777, 0o600, 'the socket is 0600');
  t.same(await operatorRequest(d, 'drain', new URLSearchParams({ volume: 'v1' })), { ok: true });
  t.same(seen, [{ action: 'drain', uid: process.getuid!(), pid: process.pid, volume: 'v1' }], 'the action sees the caller\'s uid and pid');
  const e = await operatorRequest(d, 'fail', new URLSearchParams()).catch((x: { code: string; message: string }) => x);
  t.match(e, { code: 'TM_ERR_UNKNOWN_VOLUME', message: 'no such volume' }, 'an error comes back with its code');
  await sock.close();
  const gone = await operatorRequest(d, 'drain', new URLSearchParams()).catch((x: { code: string }) => x);
  t.match(gone, { code: 'TM_ERR_CONNECTION' }, 'a stopped daemon: TM_ERR_CONNECTION');
  t.throws(() => operatorSocketPath(path.join(d, 'x'.repeat(120))), { code: 'TM_ERR_CONFIG_INVALID' }, 'a socket path too long is a config error');
});

t.test('status port: read-only, no Origin, loopback Host only', async (t) => {
  const d = await dir(t);
  const s = await startStatusServer('127.0.0.1', 0, d, () => ({ role: 'test' }));
  t.teardown(() => s.close());
  t.equal((await get(s.port, '/status')).status, 200, 'GET /status');
  t.equal((await get(s.port, '/status', 'GET', { host: `localhost:${s.port}` })).status, 200, 'Host localhost');
  for (const [what, method, headers] of [
    ['POST', 'POST', {}],
    ['PUT', 'PUT', {}],
    ['Origin', 'GET', { origin: 'https://example.com' }],
    ['Origin null', 'GET', { origin: 'null' }],
    ['foreign Host', 'GET', { host: `rebound.example:${s.port}` }],
    ['Host 127.0.0.1.example', 'GET', { host: '127.0.0.1.example' }],
  ] as const) {
    const r = await get(s.port, '/status', method, headers);
    t.equal(r.status, 403, `${what}: 403`);
    t.match(JSON.parse(r.body), { code: 'TM_ERR_FORBIDDEN' }, `${what}: TM_ERR_FORBIDDEN`);
  }
});

t.test('state lock: one holder; the refusal names it; released on release', async (t) => {
  const d = await dir(t);
  const first = await lockStateDir(d, 'a test daemon');
  t.equal((await fsp.readFile(path.join(d, LOCK_FILE), 'utf8')).trim(), String(process.pid), 'the holder records its pid');
  const e = await lockStateDir(d, 'a second daemon').catch((x: { code: string; message: string }) => x);
  t.match(e, { code: 'TM_ERR_STATE_LOCKED', message: new RegExp(`pid ${process.pid}\\b`) }, 'a second holder is refused, naming the first');
  await first.release();
  const again = await lockStateDir(d, 'a test daemon');
  t.pass('free again once released');
  await again.release();
  const missing = await lockStateDir(path.join(d, 'missing'), 'x', { create: false }).catch((x: NodeJS.ErrnoException) => x);
  t.match(missing, { code: 'ENOENT' }, 'create: false does not make the folder');
});
