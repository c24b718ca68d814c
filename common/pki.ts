// A deliberately small PKI: one self-signed CA per deployment, one ECDSA P-256 leaf per daemon.
// The role lives in the subject OU so every TLS peer can tell an agent from a master target.

import type * as X509 from '@peculiar/x509';
import { X509Certificate as NodeCertificate, createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { closest } from 'fastest-levenshtein';
import { tmError, type TidemarkError } from './errors.js';

let x509Loaded: Promise<typeof X509> | undefined;

/**
 * @peculiar/x509, loaded on first use: only issuing, revoking and reading a CRL need it, and loading it
 * (about 200 modules) cost every daemon and CLI start-up 0.24 s of CPU. It loads tsyringe, which needs
 * the Reflect metadata polyfill evaluated first.
 */
export function x509Lib(): Promise<typeof X509> {
  x509Loaded ??= (async () => {
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    return x509;
  })().catch((err: unknown) => {
    // Not kept: the next use (a CRL reload, say) tries again rather than failing for good.
    x509Loaded = undefined;
    throw pkiError(`cannot load the certificate library (@peculiar/x509): ${(err as Error).message}; is the installation complete?`, undefined, err);
  });
  return x509Loaded;
}

export const ROLES = ['agent', 'process-server', 'master-target', 'operator', 'config-server'] as const;
export type Role = (typeof ROLES)[number];

/** PEM bytes ready for node:tls, plus who the certificate says we are. */
export interface Identity { ca: Buffer; cert: Buffer; key: Buffer; name: string; role: Role }

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIG = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
// Backdate notBefore so a peer whose clock is a little behind still accepts a fresh cert.
const SKEW_MS = 5 * 60_000;
const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function isRole(s: unknown): s is Role {
  return typeof s === 'string' && (ROLES as readonly string[]).includes(s);
}

export function pkiError(message: string, p?: string, cause?: unknown): TidemarkError {
  return tmError('TM_ERR_PKI', message, p === undefined ? {} : { path: p }, cause);
}

function validity(days: number | undefined, dflt: number): { notBefore: Date; notAfter: Date } {
  const d = days ?? dflt;
  if (!Number.isFinite(d) || d <= 0) throw pkiError(`validity must be a positive number of days, got ${d}`);
  const now = Date.now();
  return { notBefore: new Date(now - SKEW_MS), notAfter: new Date(now + d * DAY_MS) };
}

// 16 random bytes, first byte 0x01-0x7f: a positive, minimally encoded DER INTEGER (limit 20 octets).
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
}

async function keyPem(k: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', k as unknown as webcrypto.CryptoKey);
  return `${(await x509Lib()).PemConverter.encode(der, 'PRIVATE KEY')}\n`;
}

// Temp file + fsync + rename + directory fsync, so a crash leaves the old file or the new one,
// never a torn key. `exclusive` publishes with link(), which fails instead of replacing.
export async function writeDurable(file: string, data: string, mode: number, exclusive: boolean): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await fsp.open(tmp, 'wx', mode);
    try { await fh.writeFile(data); await fh.sync(); } finally { await fh.close(); }
    if (exclusive) { await fsp.link(tmp, file); await fsp.unlink(tmp); } else await fsp.rename(tmp, file);
    const dh = await fsp.open(dir, 'r');
    try { await dh.sync(); } finally { await dh.close(); }
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw pkiError(`${file} already exists; refusing to overwrite it`, file, err);
    throw pkiError(`write ${file}: ${(err as Error).message}`, file, err);
  }
}

async function mkdirPrivate(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: Error) => {
    throw pkiError(`create directory ${dir}: ${err.message}`, dir, err);
  });
}

export async function readPath(p: string, what: string): Promise<Buffer> {
  try {
    return await fsp.readFile(p);
  } catch (err) {
    throw pkiError(`cannot read ${what} ${p}: ${(err as Error).message}`, p, err);
  }
}

export async function parseCert(pem: Buffer, p: string): Promise<X509.X509Certificate> {
  const x509 = await x509Lib();
  try {
    return new x509.X509Certificate(pem.toString('utf8'));
  } catch (err) {
    throw pkiError(`${p} is not a PEM certificate: ${(err as Error).message}`, p, err);
  }
}

/** The certificate as Node reads it (node:crypto, no library to load): for what a daemon checks at start. */
export function nodeCert(pem: Buffer, p: string): NodeCertificate {
  // Node would take DER too; the TLS context built from the same bytes takes only PEM.
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw pkiError(`${p} is not a PEM certificate (no BEGIN CERTIFICATE line)`, p);
  try {
    return new NodeCertificate(pem);
  } catch (err) {
    throw pkiError(`${p} is not a PEM certificate: ${(err as Error).message}`, p, err);
  }
}

/**
 * The CA key's passphrase: TIDEMARK_CA_PASSPHRASE_FILE names a file holding it (first line), so it never
 * sits in the CA folder, on a command line or in a daemon's environment. Null when not set.
 */
export async function caPassphrase(): Promise<string | null> {
  const file = process.env.TIDEMARK_CA_PASSPHRASE_FILE;
  if (!file) return null;
  const text = (await readPath(file, 'CA passphrase file')).toString('utf8').split('\n')[0]!.trim();
  if (text.length < 8) throw pkiError(`the CA passphrase in ${file} is shorter than 8 characters`, file);
  return text;
}

/**
 * The CA's signing key from <dir>/ca.key: plain PKCS#8, or encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY"),
 * which needs the passphrase (caPassphrase). A process server that holds only an encrypted key cannot
 * mint certificates if it is compromised.
 */
export async function loadCaKey(dir: string): Promise<CryptoKey> {
  const keyPath = path.join(dir, 'ca.key');
  const pem = (await readPath(keyPath, 'CA key')).toString('utf8');
  let der: ArrayBuffer;
  if (pem.includes('ENCRYPTED PRIVATE KEY')) {
    const passphrase = await caPassphrase();
    if (passphrase === null) throw pkiError(`${keyPath} is encrypted: set TIDEMARK_CA_PASSPHRASE_FILE to a file holding its passphrase`, keyPath);
    try {
      const plain = createPrivateKey({ key: pem, format: 'pem', passphrase }).export({ type: 'pkcs8', format: 'der' });
      der = plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.byteLength) as ArrayBuffer;
    } catch (err) {
      throw pkiError(`${keyPath}: wrong passphrase or damaged key (${(err as Error).message})`, keyPath, err);
    }
  } else {
    try {
      der = (await x509Lib()).PemConverter.decodeFirst(pem);
    } catch (err) {
      throw pkiError(`${keyPath} is not a PKCS#8 P-256 private key: ${(err as Error).message}`, keyPath, err);
    }
  }
  try {
    return (await webcrypto.subtle.importKey('pkcs8', der, EC, false, ['sign'])) as unknown as CryptoKey;
  } catch (err) {
    throw pkiError(`${keyPath} is not a PKCS#8 P-256 private key: ${(err as Error).message}`, keyPath, err);
  }
}

/** With TIDEMARK_CA_PASSPHRASE_FILE set, the new CA's key is written encrypted (AES-256-CBC PKCS#8) with it. */
export async function initCa(
  dir: string,
  opts: { name?: string; days?: number; force?: boolean } = {},
): Promise<{ certPath: string; keyPath: string }> {
  const certPath = path.join(dir, 'ca.crt');
  const keyPath = path.join(dir, 'ca.key');
  const { notBefore, notAfter } = validity(opts.days, 3650);
  const name = opts.name ?? 'Tidemark CA';
  if (!opts.force) {
    for (const p of [certPath, keyPath]) {
      if (await fsp.lstat(p).then(() => true, () => false)) {
        throw pkiError(`a CA already exists in ${dir} (${path.basename(p)}); replacing it would orphan every certificate it issued (use force)`, p);
      }
    }
  }
  await mkdirPrivate(dir);
  const x509 = await x509Lib();
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: [{ CN: [name] }], keys, signingAlgorithm: SIG, notBefore, notAfter,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  // Key first: ca.crt appearing is what marks the CA as complete.
  const passphrase = await caPassphrase();
  const plainKey = await keyPem(keys.privateKey);
  const caKeyText = passphrase === null ? plainKey
    : (createPrivateKey(plainKey).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string);
  await writeDurable(keyPath, caKeyText, 0o600, !opts.force);
  await writeDurable(certPath, cert.toString('pem') + '\n', 0o644, !opts.force);
  return { certPath, keyPath };
}

export async function issue(
  dir: string,
  role: Role,
  name: string,
  opts: { days?: number; outDir?: string } = {},
): Promise<{ certPath: string; keyPath: string; caPath: string }> {
  if (!isRole(role)) {
    throw pkiError(`unknown role '${String(role)}'; did you mean '${closest(String(role), ROLES)}'? (roles: ${ROLES.join(', ')})`);
  }
  if (!NAME_RE.test(name)) throw pkiError(`invalid name '${name}': use 1-64 characters of A-Z a-z 0-9 . _ -`);
  const outDir = opts.outDir ?? dir;
  if (name === 'ca' && path.resolve(outDir) === path.resolve(dir)) {
    throw pkiError(`name 'ca' would overwrite the CA's own files in ${dir}`);
  }
  const { notBefore, notAfter } = validity(opts.days, 730);
  const caPath = path.join(dir, 'ca.crt');
  const caCert = await parseCert(await readPath(caPath, 'CA certificate'), caPath);
  const caKey = await loadCaKey(dir);
  const x509 = await x509Lib();
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: [{ CN: [name] }, { OU: [role] }], issuer: caCert.subjectName,
    publicKey: keys.publicKey, signingKey: caKey, signingAlgorithm: SIG, notBefore, notAfter,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      // Every daemon both accepts and opens connections, so one cert serves both ends.
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: name }, { type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' },
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  await mkdirPrivate(outDir);
  const certPath = path.join(outDir, `${name}.crt`);
  const keyPath = path.join(outDir, `${name}.key`);
  await writeDurable(keyPath, await keyPem(keys.privateKey), 0o600, false);
  await writeDurable(certPath, cert.toString('pem') + '\n', 0o644, false);
  return { certPath, keyPath, caPath };
}

export async function readIdentity(paths: { ca: string; cert: string; key: string }): Promise<Identity> {
  const ca = await readPath(paths.ca, 'CA certificate');
  const cert = await readPath(paths.cert, 'certificate');
  const key = await readPath(paths.key, 'private key');
  const caCert = nodeCert(ca, paths.ca);
  const leaf = nodeCert(cert, paths.cert);
  // Read as TLS peers read each other's (getPeerCertificate): one CN and one OU.
  const subject = leaf.toLegacyObject().subject as Record<string, unknown>;
  const name = typeof subject.CN === 'string' && subject.CN !== '' ? subject.CN : undefined;
  const role = subject.OU;
  if (name === undefined || !isRole(role)) {
    throw pkiError(`${paths.cert} has subject '${leaf.subject.replace(/\n/g, ', ')}', not CN=<name>, OU=<role>`, paths.cert);
  }
  // Catch mixed-up files at startup rather than as an opaque handshake failure on the peer.
  let issued = false;
  try {
    issued = leaf.verify(caCert.publicKey);
  } catch {
    /* a key of another kind: not issued by this CA */
  }
  if (!issued) {
    throw pkiError(`${paths.cert} was not issued by the CA in ${paths.ca}`, paths.cert);
  }
  let spki: Buffer;
  try { spki = createPublicKey(createPrivateKey(key)).export({ type: 'spki', format: 'der' }); } catch (err) {
    throw pkiError(`${paths.key} is not a PEM private key: ${(err as Error).message}`, paths.key, err);
  }
  if (!spki.equals(leaf.publicKey.export({ type: 'spki', format: 'der' }))) {
    throw pkiError(`${paths.key} does not belong to ${paths.cert} (was one of them re-issued alone?)`, paths.key);
  }
  return { ca, cert, key, name, role };
}
