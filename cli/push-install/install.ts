// push-install (install): check everything that can be checked before touching the machine, then
// ship the package, write the agent's config and certificate, start it and wait until it is connected.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { PsConfig } from '../../process-server/config.js';
import { agentConfig, missingRouting, psEndpoint, stageEtc, statusDirOf } from './agent-config.js';
import { layout, type InstallRecord, type Layout } from './layout.js';
import type { PushOptions } from './options.js';
import { obtainPackage, packageArch, type Say } from './prepare.js';
import { becomeRoot, probe, problems } from './remote-checks.js';
import { agentUnit, startScript } from './service.js';
import { pushError, type Ssh } from './ssh.js';
import { sendDir, stagePackage, swapScript, wrapperScript } from './transfer.js';
import { waitConnected } from './wait.js';

export async function install(o: PushOptions, ps: PsConfig, ssh: Ssh, work: string, say: Say): Promise<void> {
  const L = layout(o.prefix);
  const host = o.host;
  // Local checks first: none of these needs the machine, and a mistake here must change nothing there.
  const routing = missingRouting(ps, o.name, o.volumes.map((v) => v.id!));
  if (routing) {
    throw pushError('process server routing', host, `${o.psConfig} does not route these volumes from agent "${o.name}" (push-install does not edit it):\n${routing}`);
  }
  const endpoint = psEndpoint(ps, o.psAddress, host);
  const config = agentConfig(L, o.name, { name: ps.name, ...endpoint }, o.volumes, host);

  say(`checking ${ssh.where} (host key from ${o.knownHosts})`);
  const login = await becomeRoot(ssh);
  const f = await probe(ssh, L, o.node, o.volumes.map((v) => v.path!));
  const bad = problems(f, await packageArch(o));
  if (f.installed) bad.push(`an agent is already installed in ${o.prefix}: use --upgrade to replace its package, or --uninstall`);
  else if (f.prefixUsed) bad.push(`${o.prefix} exists and is not empty: give a --prefix of its own`);
  if (bad.length > 0) throw pushError('prerequisites', host, `nothing was changed:\n  - ${bad.join('\n  - ')}`);
  const mode = f.systemd ? 'systemd' : 'direct';
  say(`${f.os} ${f.arch}, Node ${f.nodeVersion} (${f.node}), ${login === 'root' ? 'logged in as root' : `root through sudo as ${o.user}`}`);
  say(mode === 'systemd'
    ? `systemd is PID 1: the agent will run as ${L.unitPath}`
    : `systemd is not PID 1 (PID 1 is ${f.pid1 || 'unknown'}): the agent will be started directly (setsid), pid file ${L.pidFile}, log ${L.log}`);

  if (mode === 'systemd') {
    // The unit's sandbox is derived from the config; a config it cannot serve is refused now, not at start.
    try {
      agentUnit(L, { node: f.node }, config);
    } catch (e) {
      throw pushError('agent config', host, `nothing was changed: ${(e as Error).message}`, e);
    }
  }
  const pkg = await obtainPackage(o, work, say);
  if (f.keptState) say(`reusing the agent state in ${L.state} (left by an uninstall with --keep-state)`);
  const rec: InstallRecord = {
    name: o.name, mode, node: f.node, volumes: o.volumes.map((v) => v.id!),
    processServer: { name: ps.name, ...endpoint }, package: pkg.manifest, installedAt: new Date().toISOString(),
  };
  const etc = path.join(work, 'etc');
  let pid: number;
  try {
    await stageEtc(etc, o.pki!, o.name, config, rec);
  } catch (e) {
    await fsp.rm(etc, { recursive: true, force: true });
    throw pushError('agent certificate', host, `nothing was changed: ${(e as Error).message}`, e);
  }
  try {
    try {
      // etc first: its install.json is what lets --uninstall remove a half-finished install.
      await sendDir(ssh, etc, L.etc, 'write config');
    } finally {
      // The agent's private key now lives only on its machine.
      await fsp.rm(etc, { recursive: true, force: true });
    }
    say(`wrote ${L.config} (volumes ${rec.volumes.join(', ')}; process server ${endpoint.host}:${endpoint.port}) and certificate ${L.pki}/${o.name}.crt`);
    say(`uploading the package to ${L.app}`);
    await stagePackage(ssh, L, pkg);
    await ssh.check(swapScript(L), { step: 'install package' });
    await ssh.check(wrapperScript(L, f.node), { step: 'install package' });
    await start(ssh, L, rec, config, say);
    pid = await waitConnected(ssh, L, rec, { psStatusDir: statusDirOf(ps), psName: ps.name, timeoutMs: o.timeoutMs });
  } catch (e) {
    const err = e as Error;
    err.message += `\nThe agent is (partly) installed in ${o.prefix}: fix the cause and run push-install --upgrade, or remove it with --uninstall.`;
    throw err;
  }
  say(`agent ${o.name} (pid ${pid}) is connected to process server ${ps.name}: installed`);
  say(`on ${host}: ${L.bin} status --config ${L.config}`);
}

/** `config`: the agent's config, which the systemd unit's sandbox is derived from. */
export async function start(ssh: Ssh, L: Layout, rec: InstallRecord, config: unknown, say: Say): Promise<void> {
  const out = await ssh.check(startScript(L, rec, config), { step: 'start the agent', timeoutMs: 60_000 });
  const pid = /(?:started|running)=(\d*)/.exec(out)?.[1];
  say(rec.mode === 'systemd' ? `started ${L.unitPath} (pid ${pid || '?'})` : `started the agent directly (pid ${pid || '?'}), not under systemd`);
}
