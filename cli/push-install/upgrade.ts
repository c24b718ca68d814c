// push-install --upgrade: replace the package, keep the agent's config, certificate and state, restart
// it and wait until the new process is connected. The new package is unpacked before the agent is
// stopped, so the agent is down only for the swap and its restart.
import type { PsConfig } from '../../process-server/config.js';
import { statusDirOf } from './agent-config.js';
import { start } from './install.js';
import { layout, type InstallRecord, type Layout } from './layout.js';
import type { PushOptions } from './options.js';
import { obtainPackage, packageArch, type Say } from './prepare.js';
import { becomeRoot, probe, problems } from './remote-checks.js';
import { stopScript } from './service.js';
import { pushError, q, type Ssh } from './ssh.js';
import { stagePackage, swapScript, wrapperScript } from './transfer.js';
import { waitConnected } from './wait.js';

export async function readRecord(ssh: Ssh, L: Layout): Promise<InstallRecord | null> {
  const r = await ssh.run(`cat ${q(L.record)}`, { step: 'read install record', timeoutMs: 30_000 });
  if (r.code !== 0) return null;
  try {
    return JSON.parse(r.stdout) as InstallRecord;
  } catch (e) {
    throw pushError('read install record', ssh.target.host, `${L.record} is not JSON: ${(e as Error).message}`, e);
  }
}

export async function writeRecord(ssh: Ssh, L: Layout, rec: InstallRecord): Promise<void> {
  await ssh.check(`set -e; umask 077; cat > ${q(`${L.record}.tmp`)}; mv ${q(`${L.record}.tmp`)} ${q(L.record)}`,
    { step: 'write install record', input: `${JSON.stringify(rec, null, 2)}\n` });
}

export async function upgrade(o: PushOptions, ps: PsConfig, ssh: Ssh, work: string, say: Say): Promise<void> {
  const L = layout(o.prefix);
  say(`checking ${ssh.where} (host key from ${o.knownHosts})`);
  await becomeRoot(ssh);
  const old = await readRecord(ssh, L);
  if (!old) throw pushError('prerequisites', o.host, `no agent installed by push-install in ${o.prefix} (no ${L.record}); nothing was changed`);
  if (old.processServer.name !== ps.name) {
    say(`note: the agent was installed for process server ${old.processServer.name}; ${o.psConfig} is ${ps.name}`);
  }
  const f = await probe(ssh, L, o.node ?? old.node, []);
  const bad = problems(f, await packageArch(o));
  if (bad.length > 0) throw pushError('prerequisites', o.host, `nothing was changed:\n  - ${bad.join('\n  - ')}`);
  const pkg = await obtainPackage(o, work, say);
  say(`upgrading agent ${old.name}: package ${old.package.commit} (built ${old.package.builtAt}) → ${pkg.manifest.commit} (built ${pkg.manifest.builtAt})`);

  let config: unknown;
  try {
    config = JSON.parse(await ssh.check(`cat ${q(L.config)}`, { step: 'read agent config' }));
  } catch (e) {
    throw pushError('read agent config', o.host, `${L.config}: ${(e as Error).message}; nothing was changed`, e);
  }
  await stagePackage(ssh, L, pkg);
  const stopped = await ssh.check(stopScript(L, false), { step: 'stop the agent', timeoutMs: 60_000 });
  const previousPid = Number(/(?:stopped|killed)=(\d+)/.exec(stopped)?.[1]) || undefined;
  say(previousPid ? `stopped the agent (pid ${previousPid})${/killed=/.test(stopped) ? ' with SIGKILL: it did not stop within 15 s' : ''}` : 'the agent was not running');
  let pid: number;
  try {
    await ssh.check(swapScript(L), { step: 'replace package' });
    const rec: InstallRecord = { ...old, node: f.node, package: pkg.manifest, upgradedAt: new Date().toISOString() };
    await ssh.check(wrapperScript(L, rec.node), { step: 'replace package' });
    await writeRecord(ssh, L, rec);
    await start(ssh, L, rec, config, say);
    pid = await waitConnected(ssh, L, rec, { psStatusDir: statusDirOf(ps), psName: ps.name, timeoutMs: o.timeoutMs, previousPid });
  } catch (e) {
    const err = e as Error;
    err.message += `\nThe agent was stopped for the upgrade; the previous package is in ${L.appOld} if it was already replaced. Fix the cause and run push-install --upgrade again.`;
    throw err;
  }
  await ssh.check(`rm -rf ${q(L.appOld)}`, { step: 'remove previous package' });
  say(`agent ${old.name} (pid ${pid}) is connected to process server ${ps.name}: upgraded (config, certificate and state kept)`);
}
