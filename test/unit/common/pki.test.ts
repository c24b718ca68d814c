// PKI + mutual TLS over loopback with real certificates: who gets in, who is refused, and why.

import t from 'tap';
import { once } from 'node:events';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate, webcrypto } from 'node:crypto';
import tls from 'node:tls';
import { initCa, issue, loadCaKey, readIdentity, ROLES, x509Lib, type Identity, type Role } from '../../../common/pki.js';
import { clientOptions, ownCertificateProblem, peerIdentity, requireRole, serverOptions } from '../../../common/tls.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-pki-'));
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
const caA = path.join(root, 'ca-a');
const caB = path.join(root, 'ca-b');

async function identity(caDir: string, role: Role, name: string): Promise<Identity> {
  const p = await issue(caDir, role, name);
  return readIdentity({ ca: p.caPath, cert: p.certPath, key: p.keyPath });
}

async function startServer(tt: { teardown(fn: () => unknown): void }, id: Identity) {
  const sockets: tls.TLSSocket[] = [];
  const server = tls.createServer(serverOptions(id), (s) => sockets.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  tt.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { server, sockets, port: (server.address() as AddressInfo).port };
}

// Resolves when the client socket closes, with whatever happened on the way.
function connect(opts: tls.ConnectionOptions, port: number) {
  const sock = tls.connect({ ...opts, host: '127.0.0.1', port });
  const done = new Promise<{ secure: boolean; error: Error | undefined }>((resolve) => {
    let secure = false;
    let error: Error | undefined;
    sock.on('secureConnect', () => { secure = true; });
    sock.on('error', (e) => { error ??= e; });
    sock.on('close', () => resolve({ secure, error }));
  });
  return { sock, done };
}

t.before(async () => {
  await initCa(caA);
  await initCa(caB, { name: 'Rogue CA' });
});

t.test('CA and a certificate for every role', async (t) => {
  t.equal(fs.statSync(caA).mode & 0o777, 0o700, 'CA dir is private');
  t.equal(fs.statSync(path.join(caA, 'ca.key')).mode & 0o777, 0o600, 'CA key is private');
  t.match(fs.readFileSync(path.join(caA, 'ca.key'), 'utf8'), /-----BEGIN PRIVATE KEY-----/, 'PKCS#8 PEM');
  const ca = new X509Certificate(fs.readFileSync(path.join(caA, 'ca.crt')));
  t.ok(ca.ca, 'CA:true');
  t.equal(ca.subject, 'CN=Tidemark CA');
  for (const role of ROLES) {
    const id = await identity(caA, role, `host-${role}`);
    t.same({ name: id.name, role: id.role }, { name: `host-${role}`, role });
    const leaf = new X509Certificate(id.cert);
    t.ok(leaf.verify(ca.publicKey), `${role} cert is signed by the CA`);
    t.notOk(leaf.ca);
    t.equal(leaf.subjectAltName, `DNS:host-${role}, DNS:localhost, IP Address:127.0.0.1`);
    t.same([...(leaf.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'serverAuth + clientAuth');
    t.equal(fs.statSync(path.join(caA, `host-${role}.key`)).mode & 0o777, 0o600);
  }
  t.same(fs.readdirSync(caA).filter((f) => f.endsWith('.tmp')), [], 'no temp files left behind');
});

t.test('same CA: TLS 1.3 handshake, both ends see name and role', async (t) => {
  const mt = await identity(caA, 'master-target', 'mt-1');
  const ps = await identity(caA, 'process-server', 'ps-1');
  const { server, port } = await startServer(t, mt);
  const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>;
  const { sock, done } = connect(clientOptions(ps, { role: 'master-target', name: 'mt-1' }), port);
  await once(sock, 'secureConnect');
  const [serverSide] = await accepted;
  t.equal(sock.getProtocol(), 'TLSv1.3');
  t.match(peerIdentity(sock), { name: 'mt-1', role: 'master-target', serial: /^[0-9a-f]+$/ }, 'client sees the server');
  t.match(peerIdentity(serverSide), { name: 'ps-1', role: 'process-server', serial: /^[0-9a-f]+$/ }, 'server sees the client');
  t.same(requireRole(peerIdentity(serverSide), ['process-server']).name, 'ps-1');
  t.throws(() => requireRole(peerIdentity(serverSide), ['agent']), { code: 'TM_ERR_PEER_REFUSED', message: /only agent/ });
  sock.end();
  t.equal((await done).error, undefined);
});

t.test('client with a certificate from another CA is refused by the server', async (t) => {
  const mt = await identity(caA, 'master-target', 'mt-2');
  // Trusts our CA (so it accepts the server) but presents a cert signed by the rogue CA.
  const rogue = { ...(await identity(caB, 'process-server', 'intruder')), ca: mt.ca };
  const { server, sockets, port } = await startServer(t, mt);
  const refused = once(server, 'tlsClientError') as Promise<[NodeJS.ErrnoException, tls.TLSSocket]>;
  const { done } = connect(clientOptions(rogue, { role: 'master-target', name: 'mt-2' }), port);
  const [err, raw] = await refused;
  // Node verifies client certs in JS after OpenSSL finishes the handshake, then just destroys the
  // socket: the event carries a generic hang-up and the real reason is on the socket.
  t.equal(err.code, 'ECONNRESET', `server handshake error: ${err.message}`);
  t.equal(raw.authorized, false);
  t.equal(raw.authorizationError, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  // In TLS 1.3 the client finishes first, so it may see secureConnect; it then only gets EOF.
  const client = await done;
  t.pass(`client connection closed: ${client.error?.message ?? 'plain EOF, no error'}`);
  t.equal(sockets.length, 0, 'server never got a secure connection');
});

t.test('server with the wrong role is refused by the client', async (t) => {
  const impostor = await identity(caA, 'agent', 'not-a-target');
  const ps = await identity(caA, 'process-server', 'ps-3');
  const { port } = await startServer(t, impostor);
  const { sock, done } = connect(clientOptions(ps, { role: 'master-target', name: 'mt-1' }), port);
  const { secure, error } = await done;
  t.notOk(secure, 'client never reports secureConnect');
  t.match(error, { code: 'TM_ERR_PEER_REFUSED', message: /'not-a-target' \(agent\), expected 'mt-1' \(master-target\)/ });
  t.equal(sock.authorized, false);
});

t.test('server with the right role but another name than the pinned one is refused by the client', async (t) => {
  const other = await identity(caA, 'master-target', 'mt-other');
  const ps = await identity(caA, 'process-server', 'ps-4');
  const { port } = await startServer(t, other);
  const { sock, done } = connect(clientOptions(ps, { role: 'master-target', name: 'mt-1' }), port);
  const { secure, error } = await done;
  t.notOk(secure, 'client never reports secureConnect');
  t.match(error, { code: 'TM_ERR_PEER_REFUSED', message: /'mt-other' \(master-target\), expected 'mt-1'/ });
  t.equal(sock.authorized, false);
});

t.test('server whose certificate serial is revoked is refused by the client', async (t) => {
  const mt = await identity(caA, 'master-target', 'mt-5');
  const ps = await identity(caA, 'process-server', 'ps-5');
  const serial = new X509Certificate(mt.cert).serialNumber.toLowerCase();
  const { port } = await startServer(t, mt);
  const { secure, error } = await connect(clientOptions(ps, { role: 'master-target', name: 'mt-5' }, (s) => s.toLowerCase() === serial), port).done;
  t.notOk(secure);
  t.match(error, { code: 'TM_ERR_PEER_REFUSED', message: /revoked certificate/ });
});

t.test('unknown role suggests the nearest one; bad names are refused', async (t) => {
  await t.rejects(issue(caA, 'agnet' as Role, 'x1'), { code: 'TM_ERR_PKI', message: /did you mean 'agent'/ });
  await t.rejects(issue(caA, 'master_target' as Role, 'x1'), { code: 'TM_ERR_PKI', message: /'master-target'/ });
  t.notOk(fs.existsSync(path.join(caA, 'x1.crt')), 'nothing written');
  for (const bad of ['', 'a/b', 'a b', 'x'.repeat(65), 'ca']) {
    await t.rejects(issue(caA, 'agent', bad), { code: 'TM_ERR_PKI' }, `name ${JSON.stringify(bad)}`);
  }
  await t.resolves(issue(caA, 'agent', 'x'.repeat(64)));
});

t.test('readIdentity names the missing or mismatched file', async (t) => {
  const p = await issue(caA, 'operator', 'op-1');
  const missing = path.join(root, 'nope.key');
  await t.rejects(readIdentity({ ca: p.caPath, cert: p.certPath, key: missing }), {
    code: 'TM_ERR_PKI', message: new RegExp(missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')),
  });
  const other = await issue(caA, 'operator', 'op-2');
  await t.rejects(readIdentity({ ca: p.caPath, cert: p.certPath, key: other.keyPath }), { code: 'TM_ERR_PKI', message: /does not belong/ });
  await t.rejects(readIdentity({ ca: path.join(caB, 'ca.crt'), cert: p.certPath, key: p.keyPath }), { code: 'TM_ERR_PKI', message: /not issued by/ });
  // The CA's own certificate has a CN and no OU: not a daemon's identity.
  await t.rejects(readIdentity({ ca: p.caPath, cert: p.caPath, key: p.keyPath }), { code: 'TM_ERR_PKI', message: /has subject 'CN=.*', not CN=<name>, OU=<role>/ });
  const junk = path.join(root, 'junk.crt');
  fs.writeFileSync(junk, 'not a certificate\n');
  await t.rejects(readIdentity({ ca: p.caPath, cert: junk, key: p.keyPath }), { code: 'TM_ERR_PKI', message: /is not a PEM certificate/ });
  // DER: Node's parser would take it, but the TLS context built from the same bytes would not.
  const der = path.join(root, 'der.crt');
  fs.writeFileSync(der, new X509Certificate(fs.readFileSync(p.certPath)).raw);
  await t.rejects(readIdentity({ ca: p.caPath, cert: der, key: p.keyPath }), { code: 'TM_ERR_PKI', message: /is not a PEM certificate \(no BEGIN CERTIFICATE line\)/ });
  t.same(await readIdentity({ ca: p.caPath, cert: p.certPath, key: p.keyPath }).then((id) => [id.name, id.role]), ['op-1', 'operator']);
});

t.test('a certificate with two roles is no identity, even one the CA issued', async (t) => {
  const p = await issue(caA, 'agent', 'two-roles');
  const x509 = await x509Lib();
  const caCert = new x509.X509Certificate(fs.readFileSync(p.caPath, 'utf8'));
  const own = new X509Certificate(fs.readFileSync(p.certPath));
  const keys = { publicKey: await webcrypto.subtle.importKey('spki', own.publicKey.export({ type: 'spki', format: 'der' }), { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']) };
  // The same key, re-issued with a second OU: a peer reading OU could take it for either role.
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01ab', subject: [{ CN: ['two-roles'] }, { OU: ['agent'] }, { OU: ['master-target'] }], issuer: caCert.subjectName,
    publicKey: keys.publicKey as unknown as CryptoKey, signingKey: await loadCaKey(caA), signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000),
  });
  fs.writeFileSync(p.certPath, cert.toString('pem') + '\n');
  await t.rejects(readIdentity({ ca: p.caPath, cert: p.certPath, key: p.keyPath }), { code: 'TM_ERR_PKI', message: /not CN=<name>, OU=<role>/ });
});

t.test('the own-certificate check names an expired or not yet valid certificate', async (t) => {
  const id = await identity(caA, 'agent', 'dates');
  t.equal(ownCertificateProblem(id), null, 'valid now');
  t.match(ownCertificateProblem(id, new Date(Date.now() + 800 * 86_400_000)), /certificate \(dates\) expired at 20\d\d-/);
  t.match(ownCertificateProblem(id, new Date(Date.now() - 86_400_000)), /is valid only from 20\d\d-.*clock/);
});

t.test('initCa twice without force fails and leaves the first CA untouched', async (t) => {
  const dir = path.join(root, 'ca-twice');
  await initCa(dir);
  const before = { crt: fs.readFileSync(path.join(dir, 'ca.crt')), key: fs.readFileSync(path.join(dir, 'ca.key')) };
  await t.rejects(initCa(dir), { code: 'TM_ERR_PKI', message: /already exists/ });
  t.ok(fs.readFileSync(path.join(dir, 'ca.crt')).equals(before.crt), 'ca.crt bytes unchanged');
  t.ok(fs.readFileSync(path.join(dir, 'ca.key')).equals(before.key), 'ca.key bytes unchanged');
  await initCa(dir, { force: true });
  t.notOk(fs.readFileSync(path.join(dir, 'ca.key')).equals(before.key), 'force replaces it');
  t.same(fs.readdirSync(dir).sort(), ['ca.crt', 'ca.key'], 'no temp files left behind');
});
