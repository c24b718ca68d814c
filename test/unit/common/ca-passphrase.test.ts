// A passphrase-protected CA key (issue 12 item 6): with TIDEMARK_CA_PASSPHRASE_FILE set, `pki init` writes
// the key encrypted; issuing and revoking need the passphrase; without it or with a wrong one they are
// refused with TM_ERR_PKI and nothing is written. Certificates issued through it chain to the CA.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { initCa, issue } from '../../../common/pki.js';
import { listCrl, revoke } from '../../../common/crl.js';
import type { TidemarkError } from '../../../common/errors.js';

/** What an async call rejects with (undefined when it resolves). */
const caught = (fn: () => Promise<unknown>): Promise<Partial<TidemarkError> | undefined> => fn().then(() => undefined, (e: Partial<TidemarkError>) => e);

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-capass-'));
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
const ca = path.join(root, 'ca');
const good = path.join(root, 'passphrase');
const wrong = path.join(root, 'wrong');
fs.writeFileSync(good, 'correct horse battery staple\n', { mode: 0o600 });
fs.writeFileSync(wrong, 'not the passphrase\n', { mode: 0o600 });
const saved = process.env.TIDEMARK_CA_PASSPHRASE_FILE;
t.teardown(() => {
  if (saved === undefined) delete process.env.TIDEMARK_CA_PASSPHRASE_FILE;
  else process.env.TIDEMARK_CA_PASSPHRASE_FILE = saved;
});

t.test('pki init with a passphrase file writes the CA key encrypted', async (t) => {
  process.env.TIDEMARK_CA_PASSPHRASE_FILE = good;
  await initCa(ca, { name: 'Encrypted CA' });
  const key = fs.readFileSync(path.join(ca, 'ca.key'), 'utf8');
  t.match(key, /-----BEGIN ENCRYPTED PRIVATE KEY-----/, 'the key at rest is encrypted PKCS#8');
  t.notMatch(key, /-----BEGIN PRIVATE KEY-----/, 'no plain key is written');
});

t.test('issuing needs the passphrase', async (t) => {
  delete process.env.TIDEMARK_CA_PASSPHRASE_FILE;
  const none = await caught(() => issue(ca, 'agent', 'a1'));
  t.equal(none?.code, 'TM_ERR_PKI', 'without it: TM_ERR_PKI');
  t.match(none?.message ?? '', /encrypted.*TIDEMARK_CA_PASSPHRASE_FILE/, 'which says what to set');
  process.env.TIDEMARK_CA_PASSPHRASE_FILE = wrong;
  const bad = await caught(() => issue(ca, 'agent', 'a1'));
  t.equal(bad?.code, 'TM_ERR_PKI', 'a wrong passphrase: TM_ERR_PKI');
  t.match(bad?.message ?? '', /wrong passphrase/);
  t.notOk(fs.existsSync(path.join(ca, 'a1.crt')), 'no certificate was written by the refused attempts');

  process.env.TIDEMARK_CA_PASSPHRASE_FILE = good;
  const r = await issue(ca, 'agent', 'a1');
  const cert = new X509Certificate(fs.readFileSync(r.certPath));
  const caCert = new X509Certificate(fs.readFileSync(r.caPath));
  t.ok(cert.verify(caCert.publicKey), 'the certificate is signed by the CA');
  t.match(cert.subject, /CN=a1/);
});

t.test('revoking needs the passphrase too', async (t) => {
  delete process.env.TIDEMARK_CA_PASSPHRASE_FILE;
  t.equal((await caught(() => revoke(ca, 'a1')))?.code, 'TM_ERR_PKI', 'without it: refused');
  t.notOk(fs.existsSync(path.join(ca, 'crl.pem')), 'and no list was written');
  process.env.TIDEMARK_CA_PASSPHRASE_FILE = good;
  const r = await revoke(ca, 'a1');
  t.equal(r.name, 'a1');
  t.equal((await listCrl(ca)).length, 1, 'the CRL lists it');
});

t.test('a short passphrase is refused at init', async (t) => {
  const short = path.join(root, 'short');
  fs.writeFileSync(short, 'abc\n');
  process.env.TIDEMARK_CA_PASSPHRASE_FILE = short;
  t.equal((await caught(() => initCa(path.join(root, 'ca2'))))?.code, 'TM_ERR_PKI');
  t.notOk(fs.existsSync(path.join(root, 'ca2', 'ca.key')), 'no key written');
});
