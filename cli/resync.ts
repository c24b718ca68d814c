// `tidemark resync | verify <volume> --config agent.json`: ask a running agent (through its loopback
// status port) to resync or verify a volume; `verify` waits for the pass and reports what differs.
// `tidemark attach-seeded <volume> --config master-target.json`: hash a replica seeded out of band.
import { readFileSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { didYouMean, resolveFrom } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { rootLogger } from '../common/log.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { loadAgentConfig } from '../agent/config.js';
import { loadMtConfig } from '../master-target/config.js';
import { seedReplica } from '../master-target/seed.js';
import { fetchStatus } from './status.js';

/** An operator action on a daemon's loopback status endpoint; its error comes back with its code. */
export function post(port: number, pathAndQuery: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathAndQuery, method: 'POST', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        const out = JSON.parse(body || '{}') as Record<string, unknown>;
        if (res.statusCode === 200) resolve(out);
        else reject(tmError((out.code as 'TM_ERR_USAGE') ?? 'TM_ERR_IO', String(out.message ?? `HTTP ${res.statusCode}`)));
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

export function agentPort(configFile: string): number {
  const cfg = loadAgentConfig(configFile);
  const file = path.join(resolveFrom(cfg.configDir, cfg.stateDir), STATUS_PORT_FILE);
  try {
    return Number(readFileSync(file, 'utf8'));
  } catch {
    throw tmError('TM_ERR_CONNECTION', `the agent of ${configFile} is not running (no ${file})`);
  }
}

const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

/** Start a resync; returns at once (progress: `tidemark status`). */
export async function requestResync(configFile: string, volume: string): Promise<void> {
  await post(agentPort(configFile), `/resync?volume=${encodeURIComponent(volume)}&mode=resync`);
  console.log(`resync of ${volume} started; follow it with: tidemark status --config ${configFile}`);
}

/** Verify (optionally repair) and wait for the pass. Exit code 3 when differences remain. */
export async function verify(configFile: string, volume: string, repair: boolean): Promise<number> {
  const port = agentPort(configFile);
  const mode = repair ? 'repair' : 'verify';
  const asked = Date.now();
  await post(port, `/resync?volume=${encodeURIComponent(volume)}&mode=${mode}`);
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const snap = await fetchStatus(port);
    const v = (snap.volumes as Record<string, unknown>[]).find((x) => x.id === volume);
    const r = v?.resync as Record<string, number | boolean | string | Array<[number, number]>> | undefined;
    if (!r || Number(r.startedAt) < asked) continue;
    if (r.active) {
      process.stdout.write(`\r${mode} ${volume}: ${r.percent}% (${mib(Number(r.bytesProcessed))} compared)   `);
      continue;
    }
    const ranges = r.differing as Array<[number, number]>;
    console.log(`\n${mode} of ${volume}: ${mib(Number(r.bytesProcessed))} compared, ${r.differingBlocks} block(s) differ, ${Number(r.hashBytes)} bytes of hashes exchanged`);
    for (const [off, len] of ranges) console.log(`  differs: bytes [${off}, ${off + len})`);
    if (Number(r.differingRanges) > ranges.length) console.log(`  ... ${Number(r.differingRanges) - ranges.length} more range(s)`);
    if (repair) console.log(`  repaired: ${mib(Number(r.bytesSent))} sent`);
    return Number(r.differingBlocks) > 0 && !repair ? 3 : 0;
  }
}

export async function attachSeeded(configFile: string, volume: string): Promise<void> {
  const cfg = loadMtConfig(configFile);
  const v = cfg.volumes.find((x) => x.id === volume);
  if (!v) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volume}" is not in ${configFile}; ${didYouMean(volume, cfg.volumes.map((x) => x.id))}`, { volume });
  const stateDir = resolveFrom(cfg.configDir, cfg.stateDir);
  // Running means answering on its status port (a port file left by a killed daemon does not count).
  const port = await fsp.readFile(path.join(stateDir, STATUS_PORT_FILE), 'utf8').then(Number, () => 0);
  if (port > 0 && (await fetchStatus(port).then(() => true, () => false))) {
    throw tmError('TM_ERR_USAGE', `the master target of ${configFile} is running; stop it first`);
  }
  const out = await seedReplica(path.join(stateDir, 'volumes', volume), resolveFrom(cfg.configDir, v.replica), rootLogger('attach-seeded'));
  console.log(`seeded replica ${out.replica} (${mib(out.sizeBytes)}) attached; the master target hashes it when the agent first connects, and the initial resync sends only the blocks that differ`);
}
