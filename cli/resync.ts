// `tidemark resync | verify <volume> --config agent.json`: ask a running agent (through its operator
// socket) to resync or verify a volume; `verify` waits for the pass and reports what differs.
// `tidemark attach-seeded <volume> --config master-target.json`: hash a replica seeded out of band.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { didYouMean, resolveFrom } from '../common/config.js';
import { tmError } from '../common/errors.js';
import { rootLogger } from '../common/log.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { lockStateDir } from '../common/state-lock.js';
import { loadMtConfig } from '../master-target/config.js';
import { seedReplica } from '../master-target/seed.js';
import { ask, agentStateDir } from './operator.js';
import { fetchStatus } from './status.js';

/** The agent's status port, for progress (`/status` is read-only and open to local users). */
export function agentPort(configFile: string): number {
  const file = path.join(agentStateDir(configFile), STATUS_PORT_FILE);
  try {
    return Number(readFileSync(file, 'utf8'));
  } catch {
    throw tmError('TM_ERR_CONNECTION', `the agent of ${configFile} is not running (no ${file})`);
  }
}

const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

/** Start a resync; returns at once (progress: `tidemark status`). */
export async function requestResync(configFile: string, volume: string, json = false): Promise<void> {
  await ask(agentStateDir(configFile), 'resync', new URLSearchParams({ volume, mode: 'resync' }));
  if (json) console.log(JSON.stringify({ volume, mode: 'resync', started: true }));
  else console.log(`resync of ${volume} started; follow it with: tidemark status --config ${configFile}`);
}

/** Verify (optionally repair) and wait for the pass. Exit code 3 when differences remain. */
export async function verify(configFile: string, volume: string, repair: boolean, json = false): Promise<number> {
  const mode = repair ? 'repair' : 'verify';
  const asked = Date.now();
  await ask(agentStateDir(configFile), 'resync', new URLSearchParams({ volume, mode }));
  const port = agentPort(configFile);
  // Progress: redrawn in place on a terminal, a plain line at most every second otherwise, none with --json.
  const tty = process.stdout.isTTY === true;
  let told = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const snap = await fetchStatus(port);
    const v = (snap.volumes as Record<string, unknown>[]).find((x) => x.id === volume);
    const r = v?.resync as Record<string, number | boolean | string | Array<[number, number]>> | undefined;
    if (!r || Number(r.startedAt) < asked) continue;
    if (r.active) {
      const line = `${mode} ${volume}: ${r.percent}% (${mib(Number(r.bytesProcessed))} compared)`;
      if (json) continue;
      if (tty) process.stdout.write(`\r${line}   `);
      else if (Date.now() - told >= 1000) {
        console.log(line);
        told = Date.now();
      }
      continue;
    }
    const ranges = r.differing as Array<[number, number]>;
    const differs = Number(r.differingBlocks) > 0 && !repair;
    if (json) {
      console.log(JSON.stringify({ volume, mode, bytesCompared: Number(r.bytesProcessed), differingBlocks: Number(r.differingBlocks), differingRanges: Number(r.differingRanges), differing: ranges, hashBytes: Number(r.hashBytes), bytesSent: repair ? Number(r.bytesSent) : 0, exit: differs ? 3 : 0 }, null, 2));
      return differs ? 3 : 0;
    }
    console.log(`${tty ? '\n' : ''}${mode} of ${volume}: ${mib(Number(r.bytesProcessed))} compared, ${r.differingBlocks} block(s) differ, ${Number(r.hashBytes)} bytes of hashes exchanged`);
    for (const [off, len] of ranges) console.log(`  differs: bytes [${off}, ${off + len})`);
    if (Number(r.differingRanges) > ranges.length) console.log(`  ... ${Number(r.differingRanges) - ranges.length} more range(s)`);
    if (repair) console.log(`  repaired: ${mib(Number(r.bytesSent))} sent`);
    return differs ? 3 : 0;
  }
}

export async function attachSeeded(configFile: string, volume: string, json = false): Promise<void> {
  const cfg = loadMtConfig(configFile);
  const v = cfg.volumes.find((x) => x.id === volume);
  if (!v) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volume}" is not in ${configFile}; ${didYouMean(volume, cfg.volumes.map((x) => x.id))}`, { volume });
  const stateDir = resolveFrom(cfg.configDir, cfg.stateDir);
  // The state folder's lock, held while seeding: a running master target holds it (its pid is named).
  const lock = await lockStateDir(stateDir, 'tidemark attach-seeded (stop the master target first)');
  let out;
  try {
    out = await seedReplica(path.join(stateDir, 'volumes', volume), resolveFrom(cfg.configDir, v.replica), rootLogger('attach-seeded'));
  } finally {
    await lock.release();
  }
  if (json) console.log(JSON.stringify({ volume, replica: out.replica, sizeBytes: out.sizeBytes }));
  else console.log(`seeded replica ${out.replica} (${mib(out.sizeBytes)}) attached; the master target hashes it when the agent first connects, and the initial resync sends only the blocks that differ`);
}
