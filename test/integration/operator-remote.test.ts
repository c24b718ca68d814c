// The remote operator port (operatorListen) over real daemons on loopback: the configuration server, with
// its config-server certificate, drives an agent and a master target through their operator ports (a test
// failover started and cleaned up from the website, a drain and a resume), and the daemons log who asked
// and for which website user. A client certificate without an operator role, a revoked one, one from
// another CA and no certificate at all are refused with a clear code and change nothing; malformed
// requests from an authorised peer are refused before any action runs.
import { promises as fsp } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { freePort } from '../../lab/lab.js';
import { revoke } from '../../common/crl.js';
import { pino } from 'pino';
import { PeerTrust, trustPaths } from '../../common/peer-trust.js';
import { initCa, issue } from '../../common/pki.js';
import { connectTls } from '../../common/tls.js';
import { requestOver } from '../../config-server/remote.js';
import { csLab, PASSWORDS } from './config-server-lab.js';
import { scratchDir, sha256, waitFor } from './helpers.js';

const quiet = pino({ level: 'silent' });

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** A request to the website, as a browser on the site would send it (Origin its own). */
function web(base: string, ca: Buffer, method: string, p: string, opts: { cookie?: string; form?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = opts.form ? new URLSearchParams(opts.form).toString() : '';
    const req = https.request(`${base}${p}`, {
      method, ca, headers: { origin: base, ...(opts.cookie ? { cookie: opts.cookie } : {}), ...(opts.form ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)) } : {}) },
    }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const unescape = (s: string): string => s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** Send raw bytes over an authenticated connection and read what comes back until the daemon closes. */
function raw(socket: tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve) => {
    let b = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (b += c));
    socket.on('close', () => resolve(b));
    socket.on('error', () => {});
    socket.write(text);
    setTimeout(() => socket.destroy(), 15_000).unref();
  });
}

t.test('operator actions over the remote operator port', async (t) => {
  const dir = await scratchDir(t, 'op-remote');
  const agentPort = await freePort();
  const mtPort = await freePort();
  const c = await csLab(t, dir, {
    intervalMs: 1000,
    agent: { operatorListen: { host: '127.0.0.1', port: agentPort } },
    mt: { operatorListen: { host: '127.0.0.1', port: mtPort } },
    // The configuration server reads status through the state folders but acts only over the remote ports.
    csExtra: {
      tls: { cert: 'pki/cs-1.crt', key: 'pki/cs-1.key', ca: 'pki/ca.crt' },
      daemons: [
        { name: 'agent-1', role: 'agent', stateDir: 'agent-state', remote: { host: '127.0.0.1', port: agentPort } },
        { name: 'ps-1', role: 'process-server', stateDir: 'ps-cache' },
        { name: 'mt-1', role: 'master-target', stateDir: 'mt-state', remote: { host: '127.0.0.1', port: mtPort } },
      ],
    },
  });
  const { lab } = c;
  const pki = path.join(dir, 'pki');
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  t.equal(Number(await fsp.readFile(path.join(lab.stateDirs.agent, 'operator-port'), 'utf8')), agentPort, 'the agent wrote its operator port to its state folder');
  const drained = async (): Promise<unknown> => ((await lab.status('agent'))!.volumes as Array<Record<string, unknown>>).find((v) => v.id === 'vol1')!.drained;

  // Identities for the refusals: the agent's own certificate (no operator role), a config-server
  // certificate about to be revoked, and a config-server certificate of the same name from another CA.
  await issue(pki, 'config-server', 'cs-old');
  const other = path.join(dir, 'other-pki');
  await initCa(other, { name: 'Someone else\'s CA' });
  await issue(other, 'config-server', 'cs-1');
  const trustOf = async (ca: string, name: string, folder = pki): Promise<PeerTrust> => {
    const tr = await PeerTrust.open(trustPaths({ ca, cert: path.join(folder, `${name}.crt`), key: path.join(folder, `${name}.key`) }, (x) => x), quiet);
    t.teardown(() => tr.close());
    return tr;
  };
  const ca = path.join(pki, 'ca.crt');
  const asAgent = await trustOf(ca, 'agent-1');
  const asOld = await trustOf(ca, 'cs-old');
  const ask = async (tr: PeerTrust, action: string, params: Record<string, string>): Promise<{ ok: true; out: Record<string, unknown> } | { ok: false; code: string; message: string }> => {
    try {
      const { socket } = await connectTls('127.0.0.1', agentPort, tr, { role: 'agent', name: 'agent-1' });
      return { ok: true, out: await requestOver(socket, 'agent-1', action, new URLSearchParams(params), { timeoutMs: 10_000 }) };
    } catch (e) {
      return { ok: false, code: (e as { code?: string }).code ?? '?', message: (e as Error).message };
    }
  };

  // --- a certificate of the deployment without an operator role: the agent's own.
  let a = await ask(asAgent, 'drain', { volume: 'vol1' });
  t.match(a, { ok: false, code: 'TM_ERR_FORBIDDEN', message: /role 'agent'.*operator or config-server/ }, 'an agent certificate may not act');
  t.notOk(await drained(), 'nothing drained');

  // --- a config-server certificate acts until it is revoked (an unknown action: authenticated, nothing done).
  a = await ask(asOld, 'no-such-action', { volume: 'vol1' });
  t.match(a, { ok: false, code: 'TM_ERR_USAGE', message: /unknown action/ }, 'before revocation, cs-old is served (an unknown action is a usage error)');
  await revoke(pki, 'cs-old');
  // Polled with the harmless action, so a drain is never asked for while the daemon may still accept it.
  await waitFor(async () => {
    a = await ask(asOld, 'no-such-action', { volume: 'vol1' });
    return !a.ok && a.code === 'TM_ERR_PEER_REFUSED';
  }, 15_000, 'the agent refuses the revoked certificate once it reads the CRL');
  a = await ask(asOld, 'drain', { volume: 'vol1' });
  t.match(a, { ok: false, code: 'TM_ERR_PEER_REFUSED', message: /revoked/ }, 'a revoked certificate is refused, saying why');
  t.notOk(await drained(), 'nothing drained');

  // --- clients that are not ours: a certificate of another CA with the very name of our configuration
  // server, and no certificate at all. Each checks the daemon against our CA, so gets as far as its refusal.
  const caPem = await fsp.readFile(ca);
  const plainClient = async (id: { cert: Buffer; key: Buffer } | null): Promise<{ ok: false; code: string; message: string } | { ok: true }> => {
    const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const x = tls.connect({ host: '127.0.0.1', port: agentPort, ca: [caPem], ...(id ?? {}), checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' }, () => resolve(x));
      x.once('error', reject);
    });
    return requestOver(s, 'agent-1', 'drain', new URLSearchParams({ volume: 'vol1' }), { timeoutMs: 10_000 }).then(() => ({ ok: true as const }), (e: Error & { code?: string }) => ({ ok: false as const, code: e.code ?? '?', message: e.message }));
  };
  t.match(await plainClient({ cert: await fsp.readFile(path.join(other, 'cs-1.crt')), key: await fsp.readFile(path.join(other, 'cs-1.key')) }), { ok: false, code: 'TM_ERR_PEER_REFUSED', message: /not authorized/ }, 'a certificate from another CA is refused');
  t.notOk(await drained(), 'nothing drained');
  t.match(await plainClient(null), { ok: false, code: 'TM_ERR_PEER_REFUSED', message: /no certificate/ }, 'no client certificate: refused, saying so');
  t.notOk(await drained(), 'nothing drained');

  // --- malformed requests from the authorised configuration server: refused before any action runs.
  const asCs = await trustOf(ca, 'cs-1');
  const rawAsCs = async (text: string): Promise<string> => raw((await connectTls('127.0.0.1', agentPort, asCs, { role: 'agent', name: 'agent-1' })).socket, text);
  t.match(await rawAsCs('GET /drain?volume=vol1 HTTP/1.1\r\nhost: x\r\n\r\n'), /^HTTP\/1\.1 405[^]*TM_ERR_USAGE/, 'GET: 405');
  t.match(await rawAsCs('POST /drain?volume=vol1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello'), /^HTTP\/1\.1 413[^]*TM_ERR_USAGE/, 'a body: 413');
  t.match(await rawAsCs(`POST /drain?${Array.from({ length: 40 }, (_, i) => `p${i}=1`).join('&')} HTTP/1.1\r\nhost: x\r\n\r\n`), /^HTTP\/1\.1 400[^]*more than 32 parameters/, 'too many parameters: 400');
  t.match(await rawAsCs('POST /drain?volume=vol1&volume=vol2 HTTP/1.1\r\nhost: x\r\n\r\n'), /^HTTP\/1\.1 400[^]*given twice/, 'a repeated parameter: 400');
  t.match(await rawAsCs(`POST /drain?volume=${'x'.repeat(5000)} HTTP/1.1\r\nhost: x\r\n\r\n`), /^HTTP\/1\.1 414/, 'a request line over 4 KiB: 414');
  t.match(await rawAsCs('POST /DROP%20TABLE HTTP/1.1\r\nhost: x\r\n\r\n'), /^HTTP\/1\.1 400[^]*the action must be a word/, 'an action that is not a word: 400');
  t.match(await rawAsCs(`POST /drain?volume=vol1 HTTP/1.1\r\nhost: x\r\nx-filler: ${'y'.repeat(10_000)}\r\n\r\n`), /^HTTP\/1\.1 431/, 'a request head over 8 KiB: 431');
  t.match(await rawAsCs('POST /drain?volume=vol1 HTTP/1.1\r\nhost: x\r\nx-tidemark-on-behalf-of: <script>\r\n\r\n'), /^HTTP\/1\.1 400[^]*on-behalf-of/, 'a bad on-behalf-of header: 400');
  t.notOk(await drained(), 'none of them drained anything');
  const agentLog = await lab.logLines('agent');
  const reached = agentLog.filter((l) => l.msg === 'operator action (remote)');
  t.ok(reached.length > 0 && reached.every((l) => l.peer === 'cs-old' && l.action === 'no-such-action'), 'the only requests that reached an action were cs-old\'s harmless ones before its revocation');
  t.ok(agentLog.some((l) => l.msg === 'peer refused' && /role 'agent'/.test(String(l.err ?? l.reason ?? JSON.stringify(l)))), 'the agent logged the refusal of the agent certificate');

  // --- the configuration server's website, acting only through the remote ports.
  await c.startCs();
  const base = c.url();
  const login = await web(base, caPem, 'POST', '/login', { form: { user: 'olga', password: PASSWORDS.op } });
  t.equal(login.status, 303, 'logged in');
  const cookie = String((login.headers['set-cookie'] as string[])[0]).split(';')[0]!;
  const { csrf } = JSON.parse((await web(base, caPem, 'GET', '/api/session', { cookie })).body) as { csrf: string };
  await waitFor(async () => {
    const f = JSON.parse((await web(base, caPem, 'GET', '/api/fleet', { cookie })).body) as { volumes: Array<{ id: string; appliedSeq: number | null; lastAppPoint: unknown }> };
    return f.volumes.some((v) => v.id === 'vol1' && (v.appliedSeq ?? 0) > 0 && v.lastAppPoint !== null);
  }, 30_000, 'the configuration server sees vol1 with a point');
  const act = async (action: string): Promise<{ ok: boolean; detail: string }> => {
    const r = await web(base, caPem, 'POST', `/volume/vol1/action/${action}`, { cookie, form: { csrf, confirm: action } });
    const ok = /id="result" data-ok="1"/.test(r.body);
    return { ok, detail: unescape(/<pre id="detail">([^]*?)<\/pre>/.exec(r.body)?.[1] ?? r.body) };
  };
  const started = await act('test-failover-start');
  t.ok(started.ok, `test failover started over the master target's operator port: ${started.detail}`);
  const image = (JSON.parse(started.detail) as { image: string }).image;
  t.equal(await sha256(image), await sha256(c.source), 'the test failover copy is the latest point, equal to the source');
  const cleaned = await act('test-failover-cleanup');
  t.ok(cleaned.ok, `cleaned up: ${cleaned.detail}`);
  t.notOk(await fsp.stat(image).then(() => true, () => false), 'the copy is gone');
  const drain = await act('drain');
  t.ok(drain.ok, `drained over the agent's operator port: ${drain.detail}`);
  await waitFor(async () => Boolean(await drained()), 10_000, 'the agent reports vol1 drained');
  const resume = await act('resume');
  t.ok(resume.ok, `resumed: ${resume.detail}`);
  await waitFor(async () => !(await drained()), 10_000, 'the agent protects vol1 again');

  // --- who asked, as each daemon logged it; and nothing went through the local sockets.
  const mtLog = await lab.logLines('mt');
  const agentLog2 = await lab.logLines('agent');
  const remoteBy = (lines: Record<string, unknown>[], action: string): boolean => lines.some((l) => l.msg === 'operator action (remote)' && l.action === action && l.peer === 'cs-1' && l.role === 'config-server' && l.onBehalfOf === 'olga');
  t.ok(remoteBy(mtLog, 'test-failover-start') && remoteBy(mtLog, 'test-failover-cleanup'), 'the master target logged the test failover as asked by cs-1 for olga');
  t.ok(remoteBy(agentLog2, 'drain') && remoteBy(agentLog2, 'resume'), 'the agent logged drain and resume as asked by cs-1 for olga');
  t.notOk([...mtLog, ...agentLog2].some((l) => l.msg === 'operator action'), 'no action came through an operator socket');
  const audit = await web(base, caPem, 'GET', '/audit', { cookie });
  for (const want of ['test-failover-start', 'drain', 'resume']) t.match(audit.body, new RegExp(`data-audit="${want}" data-result="ok"`), `audit log: ${want} ok`);
});

