// Certificate revocation without a new CA: `tidemark pki revoke` adds a certificate's serial to a CRL
// signed by the CA (crl.pem beside ca.crt); every daemon reads it (common/peer-trust.ts) and refuses,
// and disconnects, any peer whose certificate serial is listed. The signature is checked against the CA
// the daemon already trusts, so the file can be copied around by any means.
import type * as X509 from '@peculiar/x509';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { loadCaKey, parseCert, pkiError, readPath, writeDurable, x509Lib } from './pki.js';

export const CRL_FILE = 'crl.pem';

const SIG = { name: 'ECDSA', hash: 'SHA-256' } as const;
const NEXT_UPDATE_MS = 10 * 365 * 86_400_000;

export interface RevokedEntry { serial: string; revokedAt: string; name?: string }

/** A verified revocation list: which certificate serials to refuse. */
export interface Crl {
  readonly serials: ReadonlySet<string>;
  readonly entries: readonly RevokedEntry[];
  readonly issuedAt: string;
}

export const EMPTY_CRL: Crl = { serials: new Set(), entries: [], issuedAt: '' };

/** Serial numbers as one canonical string: lower-case hex without leading zeros (Node prints upper case). */
export function normalSerial(s: string): string {
  return s.replace(/^0x/i, '').toLowerCase().replace(/^0+(?=.)/, '');
}

/**
 * Read and verify a CRL. An absent file is an empty list (nothing revoked yet); a file that does not
 * parse, or is not signed by this CA, is an error: a daemon must not silently trust everybody again.
 */
export async function readCrl(file: string, caPem: Buffer): Promise<Crl> {
  let pem: string;
  try {
    pem = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_CRL;
    throw pkiError(`cannot read revocation list ${file}: ${(err as Error).message}`, file, err);
  }
  const x509 = await x509Lib();
  let crl: X509.X509Crl;
  try {
    crl = new x509.X509Crl(pem);
  } catch (err) {
    throw pkiError(`${file} is not a PEM CRL: ${(err as Error).message}`, file, err);
  }
  const ca = await parseCert(caPem, 'CA certificate');
  if (!(await crl.verify({ publicKey: ca.publicKey }).catch(() => false))) {
    throw pkiError(`${file} is not signed by the CA (${ca.subject}); ignoring it would trust revoked certificates`, file);
  }
  const entries = crl.entries.map((e) => ({ serial: normalSerial(e.serialNumber), revokedAt: e.revocationDate.toISOString() }));
  return { serials: new Set(entries.map((e) => e.serial)), entries, issuedAt: crl.thisUpdate.toISOString() };
}

// The CA key as issue() reads it (common/pki.ts); revocation is signed by the same key.
async function caSigner(dir: string): Promise<{ cert: X509.X509Certificate; certPem: Buffer; key: CryptoKey }> {
  const caPath = path.join(dir, 'ca.crt');
  const certPem = await readPath(caPath, 'CA certificate');
  const cert = await parseCert(certPem, caPath);
  return { cert, certPem, key: await loadCaKey(dir) };
}

/** `what` is a certificate file, or the name of one the CA dir holds (<dir>/<name>.crt). */
async function certToRevoke(dir: string, what: string): Promise<{ serial: string; name: string; file: string; cert: X509.X509Certificate }> {
  const file = /[/\\]|\.(crt|pem)$/.test(what) ? what : path.join(dir, `${what}.crt`);
  const cert = await parseCert(await readPath(file, 'certificate to revoke'), file);
  return { serial: normalSerial(cert.serialNumber), name: cert.subjectName.getField('CN')[0] ?? '?', file, cert };
}

/**
 * Add a certificate to the CA's CRL (created on first use), signed by the CA, written durably. Revoking
 * one already listed changes nothing. Returns the revoked serial and the list's path.
 */
export async function revoke(dir: string, what: string): Promise<{ serial: string; name: string; crlPath: string; already: boolean }> {
  const signer = await caSigner(dir);
  const target = await certToRevoke(dir, what);
  if (!(await target.cert.verify({ publicKey: signer.cert.publicKey, signatureOnly: true }).catch(() => false))) {
    throw pkiError(`${target.file} was not issued by the CA in ${dir}; nothing to revoke here`, target.file);
  }
  const crlPath = path.join(dir, CRL_FILE);
  const current = await readCrl(crlPath, signer.certPem);
  const already = current.serials.has(target.serial);
  if (!already) {
    const entries = [...current.entries.map((e) => ({ serialNumber: e.serial, revocationDate: new Date(e.revokedAt) })),
      { serialNumber: target.serial, revocationDate: new Date() }];
    // Daemons poll the file and never expire it; nextUpdate is only there because the CRL parser we use
    // loses the entries of a list without one (it is optional in RFC 5280).
    const now = new Date();
    const x509 = await x509Lib();
    const crl = await x509.X509CrlGenerator.create({
      issuer: signer.cert.subjectName.toString(), thisUpdate: now, nextUpdate: new Date(now.getTime() + NEXT_UPDATE_MS), signingAlgorithm: SIG, signingKey: signer.key,
      entries: entries.map((e) => ({ serialNumber: e.serialNumber.length % 2 === 1 ? `0${e.serialNumber}` : e.serialNumber, revocationDate: e.revocationDate })),
    });
    // "X509 CRL" is the PEM label OpenSSL expects (the library writes "CRL"), so `openssl crl` reads it too.
    await writeDurable(crlPath, `${x509.PemConverter.encode(crl.rawData, 'X509 CRL')}\n`, 0o644, false);
  }
  return { serial: target.serial, name: target.name, crlPath, already };
}

/** The CA's CRL with each serial's name where the CA dir still holds the certificate. */
export async function listCrl(dir: string): Promise<RevokedEntry[]> {
  const caPem = await readPath(path.join(dir, 'ca.crt'), 'CA certificate');
  const crl = await readCrl(path.join(dir, CRL_FILE), caPem);
  const names = new Map<string, string>();
  for (const f of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (!f.endsWith('.crt') || f === 'ca.crt') continue;
    const c = await fsp.readFile(path.join(dir, f)).then((b) => parseCert(b, f), () => null).catch(() => null);
    if (c) names.set(normalSerial(c.serialNumber), c.subjectName.getField('CN')[0] ?? '?');
  }
  return crl.entries.map((e) => ({ ...e, ...(names.has(e.serial) ? { name: names.get(e.serial)! } : {}) }));
}
