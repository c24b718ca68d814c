// The revocation list: written and signed by the CA, read only when that CA signed it, reloaded by
// PeerTrust while a daemon runs (a bad file keeps the previous list).
import t from 'tap';
import { promises as fsp } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { CRL_FILE, listCrl, normalSerial, readCrl, revoke } from '../../../common/crl.js';
import { silentLogger } from '../../../common/log.js';
import { PeerTrust, trustPaths } from '../../../common/peer-trust.js';
import { initCa, issue } from '../../../common/pki.js';

const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-crl-'));
t.teardown(() => fsp.rm(root, { recursive: true, force: true }));
const ca = path.join(root, 'ca');
const other = path.join(root, 'other');
await initCa(ca);
await initCa(other, { name: 'Other CA' });

const serialOf = async (f: string): Promise<string> => normalSerial(new X509Certificate(await fsp.readFile(f)).serialNumber);

t.test('revoke lists the serial in a CRL the CA signed; again changes nothing', async (t) => {
  const a = await issue(ca, 'agent', 'a1');
  await issue(ca, 'agent', 'a2');
  t.same((await readCrl(path.join(ca, CRL_FILE), await fsp.readFile(a.caPath))).entries, [], 'no file: nothing revoked');
  const r = await revoke(ca, 'a1');
  t.equal(r.serial, await serialOf(a.certPath));
  t.equal(r.already, false);
  const again = await revoke(ca, a.certPath);
  t.equal(again.already, true, 'revoking twice is a no-op');
  const crl = await readCrl(r.crlPath, await fsp.readFile(a.caPath));
  t.ok(crl.serials.has(r.serial));
  t.equal(crl.serials.size, 1);
  t.same((await listCrl(ca)).map((e) => e.name), ['a1'], 'pki crl names it');
  t.match(await fsp.readFile(r.crlPath, 'utf8'), /^-----BEGIN X509 CRL-----/);
});

t.test('a CRL not signed by our CA, or not a CRL at all, is refused', async (t) => {
  await issue(other, 'agent', 'o1');
  await revoke(other, 'o1');
  const caPem = await fsp.readFile(path.join(ca, 'ca.crt'));
  await t.rejects(readCrl(path.join(other, CRL_FILE), caPem), { code: 'TM_ERR_PKI', message: /not signed by the CA/ });
  await fsp.writeFile(path.join(root, 'junk.pem'), 'not a crl');
  await t.rejects(readCrl(path.join(root, 'junk.pem'), caPem), { code: 'TM_ERR_PKI' });
  await t.rejects(revoke(ca, path.join(other, 'o1.crt')), { code: 'TM_ERR_PKI', message: /not issued by the CA/ }, 'a foreign certificate cannot be revoked here');
});

t.test('PeerTrust reloads a new list and keeps the previous one when the file is bad', async (t) => {
  const dir = path.join(root, 'trust');
  await initCa(dir);
  const me = await issue(dir, 'master-target', 'mt');
  const peer = await issue(dir, 'process-server', 'ps');
  const trust = await PeerTrust.open(trustPaths({ ca: me.caPath, cert: me.certPath, key: me.keyPath }, (x) => x), silentLogger());
  t.teardown(() => trust.close());
  const serial = await serialOf(peer.certPath);
  t.notOk(trust.isRevoked(serial));
  await revoke(dir, 'ps');
  await trust.poll();
  t.ok(trust.isRevoked(serial), 'revoked after the reload');
  t.ok(trust.isRevoked(serial.toUpperCase()), 'whatever the case of the serial');
  await fsp.writeFile(path.join(dir, CRL_FILE), 'garbage');
  await trust.poll();
  t.ok(trust.isRevoked(serial), 'a damaged list does not un-revoke anybody');
});
