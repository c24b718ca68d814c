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
import { MtVolume } from '../master-target/volume.js';
import { ask, agentStateDir } from './operator.js';
import { bytes, fetchStatus } from './status.js';
import { meter } from './progress.js';
import { mib } from '../common/units.js';

/** The agent's status port, for progress (`/status` is read-only and open to local users). */
export function agentPort(configFile: string): number {
  const file = path.join(agentStateDir(configFile), STATUS_PORT_FILE);
  try {
    return Number(readFileSync(file, 'utf8'));
  } catch {
    throw tmError('TM_ERR_CONNECTION', `the agent of ${configFile} is not running (no ${file})`);
  }
}


type Pass = Record<string, number | boolean | string | Array<[number, number]>>;

/**
 * Follow `volume`'s pass that started at or after `since` until it ends, showing its progress (bytes
 * compared of the volume, rate, ETA; bytes sent) on stderr; returns the finished pass.
 */
async function followPass(port: number, volume: string, since: number, label: string, json: boolean): Promise<Pass> {
  const m = meter(label, { json });
  try {
    for (;;) {
      const snap = await fetchStatus(port);
      const v = (snap.volumes as Record<string, unknown>[]).find((x) => x.id === volume);
      const r = v?.resync as Pass | undefined;
      if (r && Number(r.startedAt) >= since) {
        const size = Number(v!.sizeBytes);
        m.update(r.active ? Math.round((Number(r.percent) / 100) * size) : size, size, `(${bytes(Number(r.bytesSent))} sent)`);
        if (!r.active) return r;
      }
      await new Promise((res) => setTimeout(res, 500));
    }
  } finally {
    m.stop();
  }
}

/**
 * Start a resync and return (progress: `tidemark status`), or with `wait` follow it to its end; with
 * `follow` start none and follow the pass under way (the initial sync, a resync the agent started).
 */
export async function requestResync(configFile: string, volume: string, json = false, o: { wait?: boolean; follow?: boolean } = {}): Promise<void> {
  let since = Date.now();
  if (o.follow) {
    const port = agentPort(configFile);
    const v = ((await fetchStatus(port)).volumes as Record<string, unknown>[]).find((x) => x.id === volume);
    if (!v) throw tmError('TM_ERR_UNKNOWN_VOLUME', `the agent of ${configFile} has no volume "${volume}"`, { volume });
    const r = v.resync as Pass | undefined;
    if (!r?.active) {
      if (json) console.log(JSON.stringify({ volume, mode: r?.mode ?? 'resync', started: false, active: false }));
      else console.log(`no resync of ${volume} is under way${r && Number(r.finishedAt) > 0 ? `; the last ${String(r.mode)} ended ${new Date(Number(r.finishedAt)).toISOString()}` : ''}`);
      return;
    }
    since = Number(r.startedAt);
  } else {
    await ask(agentStateDir(configFile), 'resync', new URLSearchParams({ volume, mode: 'resync' }));
    if (!o.wait) {
      if (json) console.log(JSON.stringify({ volume, mode: 'resync', started: true }));
      else console.log(`resync of ${volume} started; follow it with: tidemark resync ${volume} --follow --config ${configFile} (or tidemark status)`);
      return;
    }
  }
  const r = await followPass(agentPort(configFile), volume, since, `resync ${volume}`, json);
  const done = { volume, mode: String(r.mode), started: !o.follow, active: false, reason: String(r.reason), bytesCompared: Number(r.bytesProcessed), bytesSent: Number(r.bytesSent), differingBlocks: Number(r.differingBlocks), hashBytes: Number(r.hashBytes), ms: Number(r.finishedAt) - Number(r.startedAt) };
  if (json) console.log(JSON.stringify(done));
  else console.log(`${done.mode} of ${volume} done in ${(done.ms / 1000).toFixed(1)} s: ${mib(done.bytesCompared)} compared, ${done.differingBlocks} block(s) differed, ${mib(done.bytesSent)} sent`);
}

/** Verify (optionally repair) and wait for the pass. Exit code 3 when differences remain. */
export async function verify(configFile: string, volume: string, repair: boolean, json = false): Promise<number> {
  const mode = repair ? 'repair' : 'verify';
  const asked = Date.now();
  await ask(agentStateDir(configFile), 'resync', new URLSearchParams({ volume, mode }));
  const r = await followPass(agentPort(configFile), volume, asked, `${mode} ${volume}`, json);
  const ranges = r.differing as Array<[number, number]>;
  const differs = Number(r.differingBlocks) > 0 && !repair;
  if (json) {
    console.log(JSON.stringify({ volume, mode, bytesCompared: Number(r.bytesProcessed), differingBlocks: Number(r.differingBlocks), differingRanges: Number(r.differingRanges), differing: ranges, hashBytes: Number(r.hashBytes), bytesSent: repair ? Number(r.bytesSent) : 0, exit: differs ? 3 : 0 }, null, 2));
    return differs ? 3 : 0;
  }
  console.log(`${mode} of ${volume}: ${mib(Number(r.bytesProcessed))} compared, ${r.differingBlocks} block(s) differ, ${Number(r.hashBytes)} bytes of hashes exchanged`);
  for (const [off, len] of ranges) console.log(`  differs: bytes [${off}, ${off + len})`);
  if (Number(r.differingRanges) > ranges.length) console.log(`  ... ${Number(r.differingRanges) - ranges.length} more range(s)`);
  if (repair) console.log(`  repaired: ${mib(Number(r.bytesSent))} sent`);
  return differs ? 3 : 0;
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
    out = await MtVolume.attachSeeded(stateDir, volume, resolveFrom(cfg.configDir, v.replica), rootLogger('attach-seeded'));
  } finally {
    await lock.release();
  }
  if (json) console.log(JSON.stringify({ volume, replica: out.replica, sizeBytes: out.sizeBytes }));
  else console.log(`seeded replica ${out.replica} (${mib(out.sizeBytes)}) attached; the master target hashes it when the agent first connects, and the initial resync sends only the blocks that differ`);
}
