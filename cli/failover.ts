// `tidemark failover | reverse | failback | drain | resume`: move a protected volume to the secondary site
// and back (docs/OPERATIONS.md, failover and failback).
//   failover --planned: the agent takes a final point of the stopped application's volume and stops
//     protecting it; once the master target has applied that point it is recovered to --out: no data loss.
//     Operator actions are local (a root-only Unix socket), so with the agent on another machine its final point is taken
//     there with `tidemark drain` and named here with --seq.
//   failover (unplanned): the latest retained point (or the one named), without contacting the source.
//   reverse (cli/reverse.ts): protect the failed-over volume back onto the original one.
//   failback: a planned failover in the reverse direction, in place (the original volume is the reverse
//     replica, so once it holds the final point it is the volume again), then the forward agent resumes,
//     starting with a checksum resync: only the blocks changed since the failover travel.
import path from 'node:path';
import { didYouMean, resolveFrom } from '../common/config.js';
import { tmError } from '../common/errors.js';
import type { DrainedPoint } from '../agent/drain.js';
import { loadMtConfig, type MtConfig } from '../master-target/config.js';
import { writeFailoverRecord, type FailoverRecord } from '../master-target/failover/record.js';
import { REVERSE_LAYOUT } from '../master-target/failover/reverse-plan.js';
import { checkedRecoverOptions } from '../master-target/operator-actions.js';
import { outputPolicy } from '../master-target/recovery-outputs.js';
import { recoverPoint, type RecoverResult } from '../master-target/recover.js';
import { MtVolume } from '../master-target/volume.js';
import type { RecoveryPoint } from '../master-target/volume-state.js';
import { act, mtStateDir, parseTime } from './recover.js';
import { agentStateDir, ask } from './operator.js';
import { codeOf } from '../common/errors.js';
import { reverse, type ReverseArgs } from './reverse.js';
import { withRecoverProgress } from './recover-progress.js';

export const FAILOVER_COMMANDS = ['failover', 'reverse', 'failback', 'drain', 'resume'];

/** The flags of these commands, as commander parsed them (cli/tidemark.ts declares which each accepts). */
export interface FailoverArgs extends ReverseArgs {
  'reverse-dir'?: string;
  out?: string;
  planned?: boolean;
  seq?: string;
  at?: string;
  tag?: string;
  latest?: boolean;
  force?: boolean;
  device?: boolean;
}

/** Long enough for a final pass over a large volume, or a recovery that copies one. */
const LONG_MS = 24 * 3_600_000;

const when = (ms: number): string => new Date(ms).toISOString();
const describePoint = (p: { seq: number; atMs: number; consistency: string; tags: string[] }): string =>
  `#${p.seq} (${p.consistency.toLowerCase()}, captured ${when(p.atMs)}${p.tags.length ? `, ${p.tags.join(',')}` : ''})`;

export async function failoverCommand(cmd: string, volume: string, args: Record<string, unknown>): Promise<void> {
  const a = args as FailoverArgs;
  const need = (key: keyof FailoverArgs, what: string): string => {
    const v = a[key];
    if (typeof v !== 'string' || v === '') throw tmError('TM_ERR_USAGE', `${cmd} needs --${key} <${what}>`);
    return v;
  };
  // Say what is happening as it happens; with --json only the result is printed.
  const say = (line: string): void => { if (!a.json) console.log(line); };
  switch (cmd) {
    case 'failover':
      return failover(need('config', 'master-target.json'), volume, a, say);
    case 'reverse':
      return reverse(volume, a, say);
    case 'failback':
      return failback(need('reverse-dir', 'folder written by tidemark reverse'), volume, a, say);
    case 'drain': {
      const p = await drain(need('config', 'agent.json'), volume);
      console.log(a.json ? JSON.stringify(p, null, 2) : `${volume} drained: final point ${describePoint(p)}; the agent takes no more differentials of it until \`tidemark resume\``);
      return;
    }
    case 'resume': {
      const r = await resume(need('config', 'agent.json'), volume);
      console.log(a.json ? JSON.stringify(r) : r.resumed ? `${volume} protected again: a checksum resync sends only the blocks that differ from the replica` : `${volume} was not drained: nothing to do`);
      return;
    }
    default:
      throw tmError('TM_ERR_USAGE', `unknown command "${cmd}"; ${didYouMean(cmd, FAILOVER_COMMANDS)}`);
  }
}

/** Ask the agent for the final point of `volume` and to stop protecting it (agent/drain.ts). */
export async function drain(agentConfig: string, volume: string): Promise<DrainedPoint> {
  return (await ask(agentStateDir(agentConfig), 'drain', new URLSearchParams({ volume }), LONG_MS)) as unknown as DrainedPoint;
}

export async function resume(agentConfig: string, volume: string): Promise<{ volume: string; resumed: boolean }> {
  return (await ask(agentStateDir(agentConfig), 'resume', new URLSearchParams({ volume }))) as { volume: string; resumed: boolean };
}

interface CurrentPoint {
  doneSeq: number;
  point: RecoveryPoint | null;
}

/** Wait until the master target has applied differential `seq` of `volume`; progress every second. */
async function waitApplied(stateDir: string, volume: string, seq: number, say: (l: string) => void): Promise<CurrentPoint> {
  let told = Date.now();
  for (;;) {
    const c = (await ask(stateDir, 'current-point', new URLSearchParams({ volume }))) as unknown as CurrentPoint;
    if (c.doneSeq >= seq) return c;
    if (Date.now() - told >= 1000) {
      say(`  waiting for the master target to apply #${seq} (applied #${c.doneSeq}; the process server must be running)`);
      told = Date.now();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The running master target's state folder, for its operator socket; it must answer now. */
async function runningMasterTarget(cfg: MtConfig, file: string, volume: string, why: string): Promise<string> {
  const stateDir = mtStateDir(cfg);
  await ask(stateDir, 'current-point', new URLSearchParams({ volume })).catch((e: unknown) => {
    if (codeOf(e) === 'TM_ERR_CONNECTION') throw tmError('TM_ERR_CONNECTION', `the master target of ${file} is not running: ${why}`);
    throw e;
  });
  return stateDir;
}

/**
 * Where the final point comes from: the agent, asked over its operator socket (its config given: same
 * machine), or `--seq`, the point `tidemark drain` printed on the agent's machine. Checked before any
 * daemon is asked anything.
 */
type FinalPoint = { agentConfig: string } | { seq: number };

function finalPointFrom(a: FailoverArgs, agentConfig: string | undefined): FinalPoint {
  if ((agentConfig === undefined) === (a.seq === undefined)) {
    throw tmError('TM_ERR_USAGE', 'name the final point one way: --agent-config <agent.json> to drain the agent from here, or --seq <n> as printed by `tidemark drain` on its machine');
  }
  if (agentConfig !== undefined) return { agentConfig };
  if (!/^\d+$/.test(a.seq!)) throw tmError('TM_ERR_USAGE', `--seq must be a whole number, not "${a.seq}"`);
  return { seq: Number(a.seq) };
}

/** The source drained at its final point, and that point applied on the replica: what planned failover and failback share. */
async function drainApplied(from: FinalPoint, mtStateDir: string, volume: string, say: (l: string) => void): Promise<{ finalSeq: number; current: CurrentPoint }> {
  let finalSeq: number;
  if ('agentConfig' in from) {
    say(`draining ${volume}: the agent takes a final point (the application must be stopped) ...`);
    const final = await drain(from.agentConfig, volume);
    say(`  final point ${describePoint(final)}; the agent protects ${volume} no more`);
    finalSeq = final.seq;
  } else {
    finalSeq = from.seq;
  }
  const current = await waitApplied(mtStateDir, volume, finalSeq, say);
  say(`  the master target has applied #${finalSeq}`);
  return { finalSeq, current };
}

async function failover(configFile: string, volume: string, a: FailoverArgs, say: (l: string) => void): Promise<void> {
  const cfg = loadMtConfig(configFile);
  if (!cfg.volumes.some((v) => v.id === volume)) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volume}" is not in ${configFile}; ${didYouMean(volume, cfg.volumes.map((v) => v.id))}`, { volume });
  if (!a.out) throw tmError('TM_ERR_USAGE', 'failover needs --out <file or device>: where the failed-over volume is written');
  const params = new URLSearchParams({ volume, out: path.resolve(a.out) });
  if (a.force) params.set('force', 'true');
  if (a.device) params.set('device', 'true');
  const named = [a.seq !== undefined, a.at !== undefined, a.tag !== undefined, a.latest === true].filter(Boolean).length;
  let result: RecoverResult;
  if (a.planned) {
    if (a.at !== undefined || a.tag !== undefined || a.latest) throw tmError('TM_ERR_USAGE', 'a planned failover recovers the final point of the drain; --at, --tag and --latest are for an unplanned failover');
    const from = finalPointFrom(a, a['agent-config']);
    const mtDir = await runningMasterTarget(cfg, configFile, volume, 'a planned failover waits for it to apply the final point');
    const { finalSeq } = await drainApplied(from, mtDir, volume, say);
    params.set('seq', String(finalSeq));
    result = await withRecoverProgress(mtDir, volume, a.out, a.json === true, async () => (await ask(mtDir, 'recover', params, LONG_MS)) as unknown as RecoverResult);
  } else {
    if (a.seq !== undefined) params.set('seq', a.seq);
    if (a.at !== undefined) params.set('atMs', String(parseTime(a.at)));
    if (a.tag !== undefined) params.set('tag', a.tag);
    if (named === 0 || a.latest) params.set('latest', 'true');
    say(`unplanned failover of ${volume}: recovering ${named === 0 || a.latest ? 'the latest retained point' : 'the point named'} without contacting the source ...`);
    result = await withRecoverProgress(mtStateDir(cfg), volume, a.out, a.json === true, (progress) =>
      act(configFile, 'recover', params, async (src, c) => recoverPoint(src, { ...(await checkedRecoverOptions(outputPolicy(c), params)), progress })));
  }
  const stateDir = resolveFrom(cfg.configDir, cfg.stateDir);
  const geometry = await MtVolume.geometry(stateDir, volume);
  const record: FailoverRecord = { volume, kind: a.planned ? 'planned' : 'unplanned', point: result.point, out: result.out, sizeBytes: geometry.sizeBytes, blockSize: geometry.blockSize, method: result.method, at: Date.now() };
  await writeFailoverRecord(stateDir, record);
  if (a.json) {
    console.log(JSON.stringify({ ...record, recovered: result }, null, 2));
    return;
  }
  const lost = a.planned ? 'no data lost: it holds every write made before the drain' : `writes made on the source after ${when(result.point.atMs)} are not in it`;
  console.log(`${record.kind} failover of ${volume}: point ${describePoint(result.point)} recovered into ${result.out} (${result.method}, ${(result.rolledBackBytes / 1048576).toFixed(1)} MiB rolled back, verified) in ${(result.ms.total / 1000).toFixed(2)} s; ${lost}.`);
  console.log(`Start the application on ${result.out}. To protect it back onto the original volume: tidemark reverse ${volume} --config ${configFile} --agent-config <agent.json> --dir <folder> --pki <CA folder>`);
}

async function failback(dir: string, volume: string, a: FailoverArgs, say: (l: string) => void): Promise<void> {
  const L = REVERSE_LAYOUT;
  const mtFile = path.join(dir, L.mt);
  const mtCfg = loadMtConfig(mtFile);
  const v = mtCfg.volumes.find((x) => x.id === volume);
  if (!v) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volume}" is not in ${mtFile}; ${didYouMean(volume, mtCfg.volumes.map((x) => x.id))}`, { volume });
  const original = resolveFrom(mtCfg.configDir, v.replica);
  // The reverse agent's config is in the folder; it can be asked from here only on its own machine.
  const from = finalPointFrom(a, a.seq === undefined ? path.join(dir, L.agent) : undefined);
  const mtDir = await runningMasterTarget(mtCfg, mtFile, volume, 'a failback waits for it to apply the final point onto the original volume');
  const { finalSeq, current } = await drainApplied(from, mtDir, volume, say);
  // In place: the original volume is the reverse replica; at the final point it is the volume again.
  const final = current.point;
  if (!final || final.seq !== finalSeq || current.doneSeq !== finalSeq) {
    throw tmError('TM_ERR_POINT_NOT_FOUND', `${original} is at #${current.doneSeq}${final ? '' : ' (not a recovery point)'}, not at the final point #${finalSeq}: is #${finalSeq} the point \`tidemark drain\` printed? wait for \`tidemark status --config ${mtFile}\` to show the replica consistent, then run failback again`, { volume, seq: finalSeq });
  }
  let resumed: string;
  const fwd = a['agent-config'];
  if (!fwd) resumed = `protect it again with: tidemark resume ${volume} --config <agent.json> (on the primary site)`;
  else {
    try {
      const r = await resume(fwd, volume);
      resumed = r.resumed ? 'the agent protects it again, starting with a checksum resync (only the blocks changed since the failover travel)' : 'the agent was not drained, so it was protecting the volume already: run `tidemark resync` to be sure the replica is in step';
    } catch (e) {
      resumed = `the agent of ${fwd} could not be asked to resume (${(e as Error).message}); once it runs: tidemark resume ${volume} --config ${fwd}`;
    }
  }
  if (a.json) {
    console.log(JSON.stringify({ volume, final, original, resumed }, null, 2));
    return;
  }
  console.log(`failback of ${volume}: ${original} holds the final point ${describePoint(final)} of the failed-over volume; no data lost. Start the application on it; ${resumed}.`);
  console.log(`Stop the reverse daemons (configs in ${dir}); the folder can be deleted once they are stopped.`);
}
