// `tidemark reverse <volume> --config master-target.json --agent-config agent.json --dir <folder>`: after a
// failover, set up replication the other way: an agent (and process server) at the secondary site
// protecting the failed-over volume, a master target at the primary site whose replica is the original
// volume. The original volume is attached as a seeded replica, so the reverse initial sync is a checksum
// resync and only the blocks that differ travel: what changed on either side since the failover point.
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CRL_FILE } from '../common/crl.js';
import { loadAgentConfig } from '../agent/config.js';
import { didYouMean, resolveFrom } from '../common/config.js';
import { DEFAULTS } from '../common/defaults.js';
import { volumeSize } from '../common/device.js';
import { tmError } from '../common/errors.js';
import { silentLogger } from '../common/log.js';
import { issue, type Role } from '../common/pki.js';
import { loadMtConfig } from '../master-target/config.js';
import { readFailoverRecord } from '../master-target/failover/record.js';
import { REVERSE_LAYOUT, reversePlan, type ReversePlanInput } from '../master-target/failover/reverse-plan.js';
import { MtVolume } from '../master-target/volume.js';
import { ficlone } from '../native/index.js';
import { loadPsConfig } from '../process-server/config.js';
import { agentPort } from './resync.js';
import { agentStateDir, ask } from './operator.js';
import { fetchStatus } from './status.js';

/** The options `reverse` reads (parsed by cli/failover.ts). */
export interface ReverseArgs {
  config?: string;
  'agent-config'?: string;
  dir?: string;
  pki?: string;
  source?: string;
  capture?: string;
  'primary-host'?: string;
  'secondary-host'?: string;
  'ps-port'?: string;
  'mt-port'?: string;
  'agent-operator-port'?: string;
  'ps-operator-port'?: string;
  'mt-operator-port'?: string;
  'operator-clients'?: string;
  json?: boolean;
}

const exists = (p: string): Promise<boolean> => fsp.stat(p).then(() => true, () => false);

function port(text: string | undefined, fallback: number, key: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw tmError('TM_ERR_USAGE', `--${key} must be a port number (1-65535), not "${text}"`);
  return n;
}

/**
 * Whether `port` can be listened on at `host`: false when it is in use, null when `host` is not an
 * address of this machine (the port is on another machine: it cannot be checked from here).
 */
export function portFree(host: string, port: number): Promise<boolean | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRINUSE' || e.code === 'EACCES' ? false : null));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** The reverse daemons' ports (replication, and remote operator ports when asked), by the flag that sets each. */
function portsOf(input: ReversePlanInput): Array<{ flag: string; what: string; host: string; port: number }> {
  const op = input.operatorPorts ?? {};
  const all = [
    { flag: 'ps-port', what: 'process server', host: input.secondaryHost, port: input.psPort },
    { flag: 'mt-port', what: 'master target', host: input.primaryHost, port: input.mtPort },
    { flag: 'agent-operator-port', what: 'agent\'s operator port', host: input.secondaryHost, port: op.agent },
    { flag: 'ps-operator-port', what: 'process server\'s operator port', host: input.secondaryHost, port: op.ps },
    { flag: 'mt-operator-port', what: 'master target\'s operator port', host: input.primaryHost, port: op.mt },
  ];
  return all.filter((p): p is typeof p & { port: number } => p.port !== undefined);
}

/** The reverse daemons' ports, checked before anything is written: distinct where they share a host, and free where this machine can tell. */
async function checkPorts(input: ReversePlanInput): Promise<void> {
  const ports = portsOf(input);
  for (const [i, a] of ports.entries()) {
    const b = ports.slice(0, i).find((x) => x.port === a.port && x.host === a.host);
    if (b) throw tmError('TM_ERR_USAGE', `--${b.flag} and --${a.flag} are both ${a.port} on ${a.host}: the reverse ${b.what} and ${a.what} need a port each`);
  }
  for (const { flag, what, host, port } of ports) {
    if ((await portFree(host, port)) === false) {
      throw tmError('TM_ERR_USAGE', `port ${port} on ${host} is in use (a forward daemon's, or another program's): the reverse ${what} could not listen there; give --${flag} <a free port>`);
    }
  }
}

/** --operator-clients: certificate names, comma-separated, as operatorListen.clients takes them. */
function clientsOf(text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  const names = text.split(',').map((x) => x.trim());
  const bad = names.find((x) => !/^[A-Za-z0-9._-]{1,64}$/.test(x));
  if (bad !== undefined) throw tmError('TM_ERR_USAGE', `--operator-clients is certificate names separated by commas (1-64 characters of A-Z a-z 0-9 . _ - each), not "${text}"`);
  return names;
}

/** reflink when the failed-over image's filesystem can clone it (XFS, btrfs): the reverse points a planned failback needs. */
async function chooseCapture(source: string, asked: string | undefined): Promise<'reflink' | 'none'> {
  if (asked !== undefined) {
    if (asked !== 'reflink' && asked !== 'none') throw tmError('TM_ERR_USAGE', `--capture is "reflink" or "none", not "${asked}" (for "freeze", edit the agent config written)`);
    return asked;
  }
  if (!(await fsp.stat(source)).isFile()) return 'none';
  const probe = path.join(path.dirname(source), `.tidemark-reverse-probe-${process.pid}.tmp`);
  try {
    await ficlone(source, probe);
    return 'reflink';
  } catch {
    return 'none';
  } finally {
    await fsp.rm(probe, { force: true });
  }
}

/** Certificates for the three reverse daemons in <dir>/pki, issued by the CA in `caDir` unless already there. */
async function certificates(dir: string, caDir: string | undefined, names: Array<[Role, string]>): Promise<string[]> {
  const pki = path.join(dir, REVERSE_LAYOUT.pki);
  const issued: string[] = [];
  for (const [role, name] of names) {
    if ((await exists(path.join(pki, `${name}.crt`))) && (await exists(path.join(pki, `${name}.key`)))) continue;
    if (!caDir) throw tmError('TM_ERR_USAGE', `no certificate for the reverse ${role} "${name}" in ${pki}: give --pki <CA folder> to issue one, or put ${name}.crt and ${name}.key there`);
    await issue(caDir, role, name, { outDir: pki });
    issued.push(`${role} ${name}`);
  }
  if (!(await exists(path.join(pki, 'ca.crt')))) {
    if (!caDir) throw tmError('TM_ERR_USAGE', `no ca.crt in ${pki}: give --pki <CA folder>`);
    await fsp.copyFile(path.join(caDir, 'ca.crt'), path.join(pki, 'ca.crt'));
  }
  // The CA's revocation list, when it has one: the reverse daemons refuse what the forward ones refuse.
  if (caDir) await fsp.copyFile(path.join(caDir, CRL_FILE), path.join(pki, CRL_FILE)).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
  return issued;
}

/** The forward agent must not protect the original volume while it is the reverse replica. */
async function stopForwardAgent(agentConfig: string, volume: string): Promise<string> {
  let port: number;
  try {
    port = agentPort(agentConfig);
    const snap = await fetchStatus(port);
    const v = (snap.volumes as Array<{ id: string; drained?: { seq: number } | null }>).find((x) => x.id === volume);
    if (v?.drained) return `the agent of ${agentConfig} is drained (final point #${v.drained.seq})`;
  } catch {
    return `the agent of ${agentConfig} cannot be reached from here (stopped, or on another machine): make sure it is drained before the reverse master target starts (\`tidemark drain ${volume} --config ${agentConfig}\` on its machine; a drained volume answers with its final point)`;
  }
  try {
    const p = await ask(agentStateDir(agentConfig), 'drain', new URLSearchParams({ volume }), 24 * 3_600_000);
    return `the agent of ${agentConfig} was still protecting ${volume}: drained now (final point #${String(p.seq)}, replicated to the old replica only)`;
  } catch (e) {
    return `the agent of ${agentConfig} still protects ${volume} and could not be drained (${(e as Error).message}): stop it before starting the reverse master target`;
  }
}

export async function reverse(volume: string, a: ReverseArgs, say: (l: string) => void): Promise<void> {
  const mtFile = a.config;
  const agentFile = a['agent-config'];
  const dir = a.dir;
  if (!mtFile || !agentFile || !dir) throw tmError('TM_ERR_USAGE', 'reverse needs --config <master-target.json> --agent-config <agent.json> (the forward ones) and --dir <folder for the reverse configs>');
  const mt = loadMtConfig(mtFile);
  const agent = loadAgentConfig(agentFile);
  const mv = mt.volumes.find((v) => v.id === volume);
  const av = agent.volumes.find((v) => v.id === volume);
  if (!mv || !av) throw tmError('TM_ERR_UNKNOWN_VOLUME', `volume "${volume}" is not in ${mv ? agentFile : mtFile}; ${didYouMean(volume, (mv ? agent.volumes : mt.volumes).map((v) => v.id))}`, { volume });
  if (await exists(path.join(dir, REVERSE_LAYOUT.mt))) {
    throw tmError('TM_ERR_USAGE', `${dir} already holds a reverse replication (${REVERSE_LAYOUT.mt}); to set it up again, stop its daemons and delete the folder`);
  }
  const record = await readFailoverRecord(resolveFrom(mt.configDir, mt.stateDir), volume);
  const source = a.source ? path.resolve(a.source) : record?.out;
  if (!source) throw tmError('TM_ERR_USAGE', `no failover of ${volume} is recorded on this master target: give --source <failed-over volume>`, { volume });
  const original = resolveFrom(agent.configDir, av.path);
  const sourceSize = await volumeSize(source).catch((e: Error) => { throw tmError('TM_ERR_IO', `failed-over volume ${source}: ${e.message}`, { path: source }); });
  const capture = await chooseCapture(source, a.capture);
  // The retention as written in the forward master target's file (the loaded config holds it transformed).
  const rawMt = JSON.parse(await fsp.readFile(mtFile, 'utf8')) as { volumes: Array<{ id: string; retention?: unknown }> };
  const input: ReversePlanInput = {
    volume,
    source,
    original,
    forward: { agent: agent.name, masterTarget: mt.name },
    secondaryHost: a['secondary-host'] ?? '127.0.0.1',
    primaryHost: a['primary-host'] ?? '127.0.0.1',
    psPort: port(a['ps-port'], DEFAULTS.ports.processServer, 'ps-port'),
    mtPort: port(a['mt-port'], DEFAULTS.ports.masterTarget, 'mt-port'),
    capture,
    blockSize: agent.blockSize,
    cycleIntervalMs: agent.cycleIntervalMs,
    retention: rawMt.volumes.find((v) => v.id === volume)?.retention,
  };
  const opPort = (key: 'agent-operator-port' | 'ps-operator-port' | 'mt-operator-port'): number | undefined => (a[key] === undefined ? undefined : port(a[key], 0, key));
  const operatorPorts = { agent: opPort('agent-operator-port'), ps: opPort('ps-operator-port'), mt: opPort('mt-operator-port'), clients: clientsOf(a['operator-clients']) };
  if (operatorPorts.clients && [operatorPorts.agent, operatorPorts.ps, operatorPorts.mt].every((x) => x === undefined)) {
    throw tmError('TM_ERR_USAGE', '--operator-clients names who may use the reverse daemons\' operator ports: give --agent-operator-port, --ps-operator-port and/or --mt-operator-port too');
  }
  if (Object.values(operatorPorts).some((x) => x !== undefined)) input.operatorPorts = Object.fromEntries(Object.entries(operatorPorts).filter(([, x]) => x !== undefined));
  await checkPorts(input);
  const plan = reversePlan(input);
  await fsp.mkdir(dir, { recursive: true });
  const issued = await certificates(dir, a.pki, [['agent', plan.names.agent], ['process-server', plan.names.ps], ['master-target', plan.names.mt]]);
  const L = REVERSE_LAYOUT;
  const files = { agent: path.join(dir, L.agent), ps: path.join(dir, L.ps), mt: path.join(dir, L.mt) };
  await fsp.writeFile(files.agent, JSON.stringify(plan.agent, null, 2));
  await fsp.writeFile(files.ps, JSON.stringify(plan.ps, null, 2));
  // What is written must load as the daemons will load it.
  loadAgentConfig(files.agent);
  loadPsConfig(files.ps);

  const forward = await stopForwardAgent(agentFile, volume);
  let seeded: string;
  if (await exists(original)) {
    const originalSize = await volumeSize(original);
    if (originalSize < sourceSize) throw tmError('TM_ERR_VOLUME_GEOMETRY', `original volume ${original} holds ${originalSize} bytes; the failed-over volume has ${sourceSize}`, { path: original });
    await MtVolume.attachSeeded(path.join(dir, L.mtState), volume, original, silentLogger());
    seeded = `${original} attached as a seeded replica: the reverse initial sync sends only the blocks that differ`;
  } else {
    seeded = `${original} is not on this machine: on the primary site, with ${files.mt} copied there, run \`tidemark attach-seeded ${volume} --config ${L.mt}\` before starting its master target`;
  }
  // The master target's file last: its presence marks the folder as set up.
  await fsp.writeFile(files.mt, JSON.stringify(plan.mt, null, 2));
  loadMtConfig(files.mt);
  const out = { volume, dir: path.resolve(dir), source, original, capture, names: plan.names, configs: files, issued, seeded, forward, operatorPorts: input.operatorPorts ?? null };
  if (a.json) {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  say(`reverse replication of ${volume} set up in ${dir}: ${source} (secondary site) -> ${original} (primary site)`);
  if (issued.length) say(`  certificates issued: ${issued.join(', ')}`);
  say(`  ${seeded}`);
  say(`  ${forward}`);
  const op = portsOf(input).filter((p) => p.flag.endsWith('-operator-port'));
  if (op.length) say(`  remote operator ports: ${op.map((p) => `${p.what.replace('\'s operator port', '')} ${p.host}:${p.port}`).join(', ')} (operatorListen${input.operatorPorts?.clients ? `, clients ${input.operatorPorts.clients.join(', ')}` : ''})`);
  if (capture === 'none') say(`  capture "none": ${source} cannot be cloned here, so the reverse direction has no recovery points and a planned failback cannot take its final point; set capture "freeze" in ${files.agent}`);
  say(`Start, at the primary site: tidemark master-target --config ${files.mt}`);
  say(`      at the secondary site: tidemark process-server --config ${files.ps}; tidemark agent --config ${files.agent}`);
  say(`Follow with tidemark status --config ${files.agent} --config ${files.mt}; fail back with: tidemark failback ${volume} --reverse-dir ${dir} --agent-config ${agentFile}`);
}
