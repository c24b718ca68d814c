// push-install --uninstall: stop the agent (and remove its unit), delete the package and the agent's
// files under the prefix, and say what was left. Only a prefix holding push-install's record is touched.
import { layout } from './layout.js';
import type { PushOptions } from './options.js';
import type { Say } from './prepare.js';
import { becomeRoot } from './remote-checks.js';
import { stopScript } from './service.js';
import { pushError, q, type Ssh } from './ssh.js';
import { readRecord } from './upgrade.js';

export async function uninstall(o: PushOptions, ssh: Ssh, say: Say): Promise<void> {
  const L = layout(o.prefix);
  say(`checking ${ssh.where} (host key from ${o.knownHosts})`);
  await becomeRoot(ssh);
  const rec = await readRecord(ssh, L);
  if (!rec) {
    const r = await ssh.run(`[ -e ${q(L.prefix)} ]`, { step: 'read install record' });
    if (r.code !== 0) {
      say(`nothing installed in ${o.prefix}: nothing to do`);
      return;
    }
    throw pushError('read install record', o.host, `${o.prefix} exists but holds no ${L.record}: not installed by push-install, so nothing was removed`);
  }
  // Blocktrace volumes keep kernel tracing instances that are not files: list them before the config goes.
  const cfg = await ssh.run(`cat ${q(L.config)}`, { step: 'read agent config' });
  let traced: string[] = [];
  try {
    const vols = (JSON.parse(cfg.stdout) as { volumes?: { id: string; tracker?: string }[] }).volumes ?? [];
    traced = vols.filter((v) => v.tracker === 'blocktrace').map((v) => v.id);
  } catch {
    // no readable config: no instances to report
  }

  const stopped = await ssh.check(stopScript(L, true), { step: 'stop the agent', timeoutMs: 60_000 });
  const pid = /(?:stopped|killed)=(\d+)/.exec(stopped)?.[1];
  say(pid ? `stopped the agent (pid ${pid})${/killed=/.test(stopped) ? ' with SIGKILL: it did not stop within 15 s' : ''}` : 'the agent was not running');
  if (/removed=/.test(stopped)) say(`removed ${L.unitPath}`);

  const out = await ssh.check([
    'set -e',
    `cd ${q(L.prefix)}`,
    'rm -rf app app.new app.old .upload.tar.gz etc log run',
    'rm -f bin/tidemark; rmdir bin 2>/dev/null || true',
    o.keepState ? 'echo keptState=1' : 'rm -rf state',
    'cd /',
    `if rmdir ${q(L.prefix)} 2>/dev/null; then echo removedPrefix=1; else echo "left=$(ls -A ${q(L.prefix)} | tr '\\n' ' ')"; fi`,
    ...traced.map((id) => `for d in /sys/kernel/tracing/instances/tidemark.${id}.????????; do [ -d "$d" ] && echo "instance=$d"; done; true`),
  ].join('\n'), { step: 'remove files' });

  say(`removed the package, config, certificate, log and pid file${o.keepState ? '' : ' and the agent state'} from ${o.prefix}`);
  if (/removedPrefix=1/.test(out)) say(`removed ${o.prefix}`);
  const left = /left=(.*)/.exec(out)?.[1]?.trim();
  if (o.keepState) say(`left: ${L.state} (--keep-state): a later push-install with this prefix reuses it`);
  if (left && !o.keepState) say(`left in ${o.prefix} (not written by push-install): ${left}`);
  for (const m of out.matchAll(/instance=(\S+)/g)) {
    say(`left: kernel tracing instance ${m[1]} (blocktrace); remove it with rmdir ${m[1]} (docs/OPERATIONS.md, tracing instances)`);
  }
  say(`process server: its config still routes ${rec.volumes.join(', ')} from agent ${rec.name}; remove those entries when the volumes are retired`);
}
