// Status collected over the remote operator port: the configuration server is given no status port and no
// state folder for the agent, the process server and the master target, only their `operatorListen`
// (`remote`), so the only way it can see them is the mutual-TLS read (`status`, `metrics`). The volume
// appears in the fleet with what the master target's own /status says, and the process server with its
// connected agent; the process server's port refuses any other action (it takes none). Then the same
// server with another config-server certificate of the deployment CA, one the daemons'
// operatorListen.clients does not name, is refused by all three and shows them down with the refusal as
// the cause. (A certificate of another CA does not get that far: the
// server refuses to start with it, and the port's refusal of one is test/integration/operator-remote.test.ts.)
import { promises as fsp } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import t from 'tap';
import { freePort } from '../../lab/lab.js';
import { pino } from 'pino';
import { PeerTrust, trustPaths } from '../../common/peer-trust.js';
import { issue } from '../../common/pki.js';
import { connectTls } from '../../common/tls.js';
import { requestOver } from '../../config-server/remote.js';
import { csLab, PASSWORDS } from './config-server-lab.js';
import { scratchDir, waitFor } from './helpers.js';

interface Fleet {
  round: number;
  daemons: Array<{ name: string; up: boolean; cause: string | null }>;
  volumes: Array<{ id: string; agent: string | null; masterTarget: string | null; appliedSeq: number | null; lastSeq: number | null }>;
}

function get(base: string, ca: Buffer, p: string, opts: { cookie?: string; form?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const body = opts.form ? new URLSearchParams(opts.form).toString() : '';
    const req = https.request(`${base}${p}`, {
      method: opts.form ? 'POST' : 'GET', ca,
      headers: { origin: base, ...(opts.cookie ? { cookie: opts.cookie } : {}), ...(opts.form ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)) } : {}) },
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

t.test('status of daemons reachable only through their remote operator port', async (t) => {
  const dir = await scratchDir(t, 'status-remote');
  const agentPort = await freePort();
  const mtPort = await freePort();
  const psPort = await freePort();
  const daemons = [
    { name: 'agent-1', role: 'agent', remote: { host: '127.0.0.1', port: agentPort } },
    { name: 'ps-1', role: 'process-server', remote: { host: '127.0.0.1', port: psPort } },
    { name: 'mt-1', role: 'master-target', remote: { host: '127.0.0.1', port: mtPort } },
  ];
  const c = await csLab(t, dir, {
    intervalMs: 500,
    agent: { operatorListen: { host: '127.0.0.1', port: agentPort, clients: ['cs-1'] } },
    ps: { operatorListen: { host: '127.0.0.1', port: psPort, clients: ['cs-1'] } },
    mt: { operatorListen: { host: '127.0.0.1', port: mtPort, clients: ['cs-1'] } },
    csExtra: { tls: { cert: 'pki/cs-1.crt', key: 'pki/cs-1.key', ca: 'pki/ca.crt' }, daemons },
  });
  const { lab } = c;
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  const ca = await fsp.readFile(path.join(dir, 'pki', 'ca.crt'));

  const session = async (): Promise<string> => {
    const login = await get(c.url(), ca, '/login', { form: { user: 'victor', password: PASSWORDS.view } });
    t.equal(login.status, 303, 'logged in');
    return String((login.headers['set-cookie'] as string[])[0]).split(';')[0]!;
  };
  const fleet = async (cookie: string): Promise<Fleet> => JSON.parse((await get(c.url(), ca, '/api/fleet', { cookie })).body) as Fleet;

  await c.startCs();
  let cookie = await session();
  const mtSeq = async (): Promise<number> => Number(((await lab.status('mt'))!.volumes as Array<Record<string, unknown>>).find((v) => v.id === 'vol1')!.appliedSeq);
  let f: Fleet | null = null;
  await waitFor(async () => {
    f = await fleet(cookie);
    const v = f.volumes.find((x) => x.id === 'vol1');
    return v !== undefined && v.agent === 'agent-1' && v.masterTarget === 'mt-1' && v.appliedSeq === (await mtSeq()) && (v.appliedSeq ?? 0) > 0;
  }, 30_000, 'vol1 is in the fleet, its agent and master target read over their operator ports, at the master target\'s applied seq');
  await waitFor(async () => {
    f = await fleet(cookie);
    return f.daemons.every((d) => d.up);
  }, 30_000, 'agent-1, ps-1 and mt-1 are up, each read only over its operator port');
  const mtLog = await lab.logLines('mt');
  t.notOk(mtLog.some((l) => l.msg === 'operator action (remote)'), 'reading status ran no operator action on the master target');

  // The process server's port, asked as cs-1 directly: status reads its snapshot; an action is refused.
  const cs1 = await PeerTrust.open(trustPaths({ ca: path.join(dir, 'pki', 'ca.crt'), cert: path.join(dir, 'pki', 'cs-1.crt'), key: path.join(dir, 'pki', 'cs-1.key') }, (x) => x), pino({ level: 'silent' }));
  t.teardown(() => cs1.close());
  const askPs = async (action: string): Promise<Record<string, unknown>> => {
    const { socket } = await connectTls('127.0.0.1', psPort, cs1, { role: 'process-server', name: 'ps-1' });
    return requestOver(socket, 'ps-1', action, new URLSearchParams(), { timeoutMs: 10_000 });
  };
  const psStatus = await askPs('status');
  t.equal(psStatus.role, 'process-server', 'the process server\'s operator port answers its status');
  t.same(psStatus.agents, ['agent-1'], 'with its connected agent');
  t.match(String(((await askPs('metrics')) as { text?: string }).text), /tidemark_/, 'and its metrics');
  await t.rejects(askPs('drain'), { code: 'TM_ERR_USAGE', message: /takes no operator actions/ }, 'an action on the process server\'s port is refused');

  // --- the same server with a config-server certificate the daemons do not name in clients: refused by all three.
  await c.killCs();
  await issue(path.join(dir, 'pki'), 'config-server', 'cs-2');
  const cfg = JSON.parse(await fsp.readFile(c.csConfig, 'utf8')) as Record<string, unknown>;
  await fsp.writeFile(c.csConfig, JSON.stringify({ ...cfg, tls: { cert: 'pki/cs-2.crt', key: 'pki/cs-2.key', ca: 'pki/ca.crt' } }));
  // The restarted server shows what it last saw until its first round: wait for a round after the start.
  await c.startCs();
  cookie = await session();
  const first = (await fleet(cookie)).round;
  await waitFor(async () => {
    f = await fleet(cookie);
    return f.round > first + 1;
  }, 30_000, 'collection rounds with the wrong certificate');
  for (const name of ['agent-1', 'ps-1', 'mt-1']) {
    const d = f!.daemons.find((x) => x.name === name)!;
    t.equal(d.up, false, `${name} is down for this server`);
    t.match(d.cause, /TM_ERR_FORBIDDEN.*cs-2.*not among this daemon's operatorListen\.clients/, `${name}'s cause is the refusal of the certificate: ${d.cause}`);
  }
  t.ok((await lab.logLines('agent')).some((l) => l.msg === 'peer refused' && /cs-2/.test(JSON.stringify(l))), 'the agent logged the refused certificate');
});
