#!/usr/bin/env node
// `tidemark`: one command, a subcommand per daemon and per operator action. Operator actions reach the
// daemons through their root-only operator sockets (common/operator-socket.ts).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { loadAgentConfig } from '../agent/config.js';
import { didYouMean, resolveFrom } from '../common/config.js';
import { TidemarkError, tmError, codeOf } from '../common/errors.js';
import { rootLogger } from '../common/log.js';
import { initCa, issue, isRole, ROLES } from '../common/pki.js';
import { listCrl, revoke } from '../common/crl.js';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import { loadMtConfig } from '../master-target/config.js';
import { MasterTarget } from '../master-target/server.js';
import { loadPsConfig } from '../process-server/config.js';
import { ProcessServer } from '../process-server/server.js';
import { pushInstall } from '../process-server/push-install/cli.js';
import { runDemo } from './demo.js';
import { groupPointsCommand, points, recover, recoverGroupCommand, testFailover } from './recover.js';
import { FAILOVER_COMMANDS, failoverCommand } from './failover.js';
import { attachSeeded, requestResync, verify } from './resync.js';
import { runDaemon } from './run-daemon.js';
import { serviceUnitsCommand } from './service-units.js';
import { fetchStatus, formatStatus } from './status.js';

const USAGE = `usage: tidemark <command> [options]

  agent --config <file>            run the agent (protected machine)
  process-server --config <file>   run the process server (primary site)
  master-target --config <file>    run the master target (secondary site)
  pki init --dir <dir> [--name N]  create a certificate authority
  pki issue <role> <name> --dir <dir> [--out <dir>]
                                   issue a key and certificate (role: ${ROLES.join(', ')})
  pki revoke <name|cert file> --dir <dir>
                                   add a certificate to the CA's revocation list (<dir>/crl.pem); daemons
                                   reading it refuse and disconnect that peer within seconds
  pki crl --dir <dir>              list the revoked certificates
  status --config <file> [--config <file> ...]
                                   show replication state of the daemons these configs describe
  resync <volume> --config <agent.json>
                                   bring the replica in step by checksum comparison (only differing blocks travel)
  verify <volume> --config <agent.json> [--repair]
                                   compare source and replica by hashes (the replica is re-read); report
                                   differing ranges (exit 3 if any), or send them with --repair
  attach-seeded <volume> --config <master-target.json>
                                   before first replication: adopt the configured replica, seeded out of band
  points <volume> --config <master-target.json> [--json]
                                   list the volume's retained recovery points
  recover <volume> --config <master-target.json> --out <file|device>
          (--seq N | --at <time|"15m ago"> | --tag <name> | --latest) [--force] [--copy] [--verify full] [--device]
                                   materialise a retained point (reflink clone + roll back), verified; --out must be
                                   under the config's recovery.roots (a device: in recovery.devices, with --device)
  points --group <name> --config <master-target.json>
  recover --group <name> --config <master-target.json> --out-dir <dir> (--latest | --at <time> | --tag cg:...)
                                   a consistency group's points; recover every member to one cut
  test-failover start <volume> --config <master-target.json> [--seq N|--at T|--tag X] [--loop]
  test-failover cleanup|list [<volume>] --config <master-target.json>
                                   a writable copy of a point for a rehearsal; replication goes on
  failover <volume> --config <master-target.json> --out <file|device> [--force] [--device] [--json]
          [--planned (--agent-config <agent.json> | --seq N) | --seq N | --at T | --tag X | --latest]
                                   planned: drain the source to a final point (or take the one \`drain\` printed)
                                   and recover exactly it (no data loss); else the latest (or named) retained
                                   point, without the source
  reverse <volume> --config <master-target.json> --agent-config <agent.json> --dir <folder> [--pki <CA dir>]
          [--source <failed-over volume>] [--primary-host H] [--secondary-host H] [--ps-port N] [--mt-port N]
                                   configs to protect the failed-over volume back onto the original one
                                   (attached as a seeded replica: only differing blocks travel)
  failback <volume> --reverse-dir <folder> [--seq N] [--agent-config <forward agent.json>]
                                   planned failover back onto the original volume, then resume forward protection
  drain|resume <volume> --config <agent.json>
                                   stop protecting a volume after a final point / protect it again (with a resync)
  service-units --out <dir> --config <file> [--config <file> ...] [--role R] [--install-dir D] [--node N] [--user U]
                                   write a hardened systemd unit and a Windows install script per daemon config
  push-install --host <h> --identity <key> --ps-config <ps.json> --pki <ca-dir> --volume id=<id>,path=<path> ...
  push-install --upgrade|--uninstall --host <h> --identity <key> ...
                                   install, upgrade or remove the agent on a protected machine over SSH
                                   (tidemark push-install --help for every option)
  demo [--dir <dir>] [--seconds N] [--size-mib N]
                                   replicate a generated volume through all three daemons and prove it`;

const COMMANDS = ['agent', 'process-server', 'master-target', 'pki', 'demo', 'status', 'resync', 'verify', 'attach-seeded', 'points', 'recover', 'test-failover', 'service-units', 'push-install', ...FAILOVER_COMMANDS, 'help'];

function usageError(msg: string): TidemarkError {
  return tmError('TM_ERR_USAGE', `${msg}\n\n${USAGE}`);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(USAGE);
    return;
  }
  // push-install parses its own options (process-server/push-install/options.ts).
  if (cmd === 'push-install') return pushInstall(rest);
  // So do failover, reverse, failback, drain and resume (cli/failover.ts).
  if (FAILOVER_COMMANDS.includes(cmd)) return failoverCommand(cmd, rest);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      config: { type: 'string', multiple: true },
      dir: { type: 'string' },
      out: { type: 'string' },
      name: { type: 'string' },
      seconds: { type: 'string' },
      'size-mib': { type: 'string' },
      force: { type: 'boolean' },
      repair: { type: 'boolean' },
      role: { type: 'string' },
      'install-dir': { type: 'string' },
      node: { type: 'string' },
      user: { type: 'string' },
      seq: { type: 'string' },
      at: { type: 'string' },
      tag: { type: 'string' },
      latest: { type: 'boolean' },
      copy: { type: 'boolean' },
      verify: { type: 'string' },
      loop: { type: 'boolean' },
      json: { type: 'boolean' },
      group: { type: 'string' },
      'out-dir': { type: 'string' },
      device: { type: 'boolean' },
    },
  });
  const config = (): string => {
    const c = values.config?.[0];
    if (!c) throw usageError(`${cmd} needs --config <file>`);
    return c;
  };
  switch (cmd) {
    case 'agent': {
      const cfg = loadAgentConfig(config());
      const log = rootLogger(`agent ${cfg.name}`);
      return runDaemon(new Agent(cfg, log), log);
    }
    case 'process-server': {
      const cfg = loadPsConfig(config());
      const log = rootLogger(`process-server ${cfg.name}`);
      return runDaemon(new ProcessServer(cfg, log), log);
    }
    case 'master-target': {
      const cfg = loadMtConfig(config());
      const log = rootLogger(`master-target ${cfg.name}`);
      return runDaemon(new MasterTarget(cfg, log), log);
    }
    case 'pki':
      return pki(positionals, values);
    case 'status':
      return status(values.config ?? []);
    case 'resync':
      return requestResync(config(), volumeArg(positionals));
    case 'verify':
      process.exitCode = await verify(config(), volumeArg(positionals), values.repair ?? false);
      return;
    case 'points':
      return values.group !== undefined ? groupPointsCommand(config(), values.group, values) : points(config(), volumeArg(positionals), values);
    case 'recover':
      return values.group !== undefined ? recoverGroupCommand(config(), values.group, values) : recover(config(), volumeArg(positionals), values);
    case 'test-failover':
      return testFailover(config(), positionals[0], positionals[1], values);
    case 'attach-seeded':
      return attachSeeded(config(), volumeArg(positionals));
    case 'service-units':
      for (const f of await serviceUnitsCommand({ out: values.out, configs: values.config ?? [], role: values.role, installDir: values['install-dir'], nodePath: values.node, user: values.user })) console.log(`wrote ${f}`);
      return;
    case 'demo':
      return runDemo({ dir: values.dir, seconds: values.seconds === undefined ? undefined : Number(values.seconds), sizeMiB: values['size-mib'] === undefined ? undefined : Number(values['size-mib']) });
    default:
      throw usageError(`unknown command "${cmd}"; ${didYouMean(cmd, COMMANDS)}`);
  }
}

function volumeArg(positionals: string[]): string {
  const v = positionals[0];
  if (!v) throw usageError('which volume? give its id');
  return v;
}

async function pki(positionals: string[], values: { dir?: string; out?: string; name?: string; force?: boolean }): Promise<void> {
  const [sub, role, name] = positionals;
  if (!values.dir) throw usageError('pki needs --dir <dir> (where the CA lives)');
  if (sub === 'init') {
    const r = await initCa(values.dir, { name: values.name, force: values.force });
    console.log(`CA created: ${r.certPath}`);
  } else if (sub === 'issue') {
    if (!role || !name) throw usageError('pki issue needs <role> <name>');
    if (!isRole(role)) throw tmError('TM_ERR_PKI', `unknown role "${role}"; ${didYouMean(role, ROLES)}`);
    const r = await issue(values.dir, role, name, { outDir: values.out });
    console.log(`issued ${role} ${name}: ${r.certPath} ${r.keyPath}`);
  } else if (sub === 'revoke') {
    if (!role) throw usageError('pki revoke needs the name of a certificate in --dir, or a certificate file');
    const r = await revoke(values.dir, role);
    console.log(r.already ? `${r.name} (serial ${r.serial}) was already revoked; ${r.crlPath} unchanged` : `revoked ${r.name} (serial ${r.serial}): ${r.crlPath}; copy it beside ca.crt wherever a daemon runs`);
  } else if (sub === 'crl') {
    const list = await listCrl(values.dir);
    if (list.length === 0) console.log('no certificate is revoked');
    for (const e of list) console.log(`${e.serial}  ${e.revokedAt}  ${e.name ?? '(certificate not in this CA dir)'}`);
  } else {
    throw usageError(`unknown pki command "${sub ?? ''}"; ${didYouMean(sub ?? '', ['init', 'issue', 'revoke', 'crl'])}`);
  }
}

/** Find each daemon's status port through the state folder its config names. */
async function status(configs: string[]): Promise<void> {
  if (configs.length === 0) throw usageError('status needs at least one --config <file>');
  const snaps: Record<string, unknown>[] = [];
  for (const file of configs) {
    const raw = JSON.parse(readFileSync(file, 'utf8')) as { stateDir?: string; cacheDir?: string };
    const dir = resolveFrom(path.dirname(path.resolve(file)), raw.stateDir ?? raw.cacheDir ?? '.');
    try {
      const port = Number(readFileSync(path.join(dir, STATUS_PORT_FILE), 'utf8'));
      snaps.push(await fetchStatus(port));
    } catch (e) {
      console.error(`${file}: daemon not reachable (${(e as Error).message})`);
    }
  }
  console.log(formatStatus(snaps));
}

main(process.argv.slice(2)).catch((e: unknown) => {
  const code = codeOf(e);
  console.error(`tidemark: ${code}: ${(e as Error).message ?? String(e)}`);
  process.exit(code === 'TM_ERR_USAGE' ? 64 : 1);
});
