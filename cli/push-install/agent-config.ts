// What push-install writes into <prefix>/etc on the protected machine: the agent's config (checked with
// the agent's own schema, so a bad --volume is refused here rather than by an agent that will not
// start), its certificate issued by this process server's CA, and the install record.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { CRL_FILE } from '../../common/crl.js';
// push-install writes an agent config: the agent's schema is the one definition of what is valid.
import { agentConfigSchema } from '../../agent/config.js';
import { resolveFrom, validateConfig } from '../../common/config.js';
import { issue } from '../../common/pki.js';
import type { PsConfig } from '../../process-server/config.js';
import type { Layout } from './layout.js';
import type { VolumeSpec } from './options.js';
import { pushError } from './ssh.js';

const WILDCARD = new Set(['0.0.0.0', '::', '127.0.0.1', '::1', 'localhost']);

/** Where the agent will reach this process server: --ps-address, else its listen address if usable from elsewhere. */
export function psEndpoint(ps: PsConfig, override: { host: string; port: number | undefined } | undefined, host: string): { host: string; port: number } {
  const h = override?.host ?? ps.listen.host;
  const port = override?.port ?? ps.listen.port;
  if (WILDCARD.has(h)) {
    throw pushError('process server address', host, `the process server listens on ${h}, which does not say how ${host} reaches it: give --ps-address <host>[:<port>]`);
  }
  if (port === 0) throw pushError('process server address', host, 'the process server listens on port 0 (any): give --ps-address <host>:<port>');
  return { host: h, port };
}

/**
 * The process server only takes volumes its config assigns to this agent, and push-install does not
 * change or reload that config: return the entries the operator must add (null when all are there).
 */
export function missingRouting(ps: PsConfig, agent: string, volumeIds: string[]): string | null {
  const mt = ps.masterTargets[0]!.name;
  const missing = volumeIds.filter((id) => !ps.volumes.some((v) => v.id === id && v.agent === agent));
  const wrongOwner = missing.filter((id) => ps.volumes.some((v) => v.id === id));
  if (missing.length === 0) return null;
  const lines = missing.filter((id) => !wrongOwner.includes(id)).map((id) => `    { "id": "${id}", "agent": "${agent}", "masterTarget": "${mt}" }`);
  const notes = wrongOwner.map((id) => `volume "${id}" is assigned to agent "${ps.volumes.find((v) => v.id === id)!.agent}", not "${agent}": change its "agent"`);
  return [...(lines.length ? ['add to "volumes" (choose the master target), then restart the process server:', ...lines] : []), ...notes].join('\n');
}

export function statusDirOf(ps: PsConfig): string {
  return resolveFrom(ps.configDir, ps.cacheDir);
}

/** `ps.name` is the process server's certificate name, which the agent pins. */
export function agentConfig(L: Layout, name: string, ps: { name: string; host: string; port: number }, volumes: VolumeSpec[], host: string): Record<string, unknown> {
  const cfg = {
    name,
    stateDir: L.state,
    tls: { ca: path.posix.join(L.pki, 'ca.crt'), cert: path.posix.join(L.pki, `${name}.crt`), key: path.posix.join(L.pki, `${name}.key`) },
    processServer: ps,
    volumes,
  };
  try {
    validateConfig(agentConfigSchema, cfg, `agent config for ${host}`);
  } catch (e) {
    throw pushError('agent config', host, `${(e as Error).message} (from --volume)`, e);
  }
  return cfg;
}

/**
 * Stage <prefix>/etc in `dir`: agent.json, install.json and pki/ with the CA certificate and a new key
 * and certificate for `name`, issued into this private folder so the agent's key stays only on its machine.
 */
export async function stageEtc(dir: string, pkiDir: string, name: string, config: Record<string, unknown>, record: unknown): Promise<void> {
  const pki = path.join(dir, 'pki');
  await fsp.mkdir(pki, { recursive: true, mode: 0o700 });
  const issued = await issue(pkiDir, 'agent', name, { outDir: pki });
  await fsp.copyFile(issued.caPath, path.join(pki, 'ca.crt'));
  // The CA's revocation list, if it has one, so the agent refuses revoked process servers from the start.
  await fsp.copyFile(path.join(pkiDir, CRL_FILE), path.join(pki, CRL_FILE)).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
  await fsp.writeFile(path.join(dir, 'agent.json'), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await fsp.writeFile(path.join(dir, 'install.json'), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
}
