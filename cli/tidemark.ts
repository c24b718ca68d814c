#!/usr/bin/env node
// `tidemark`: one command, a subcommand per daemon and per operator action, parsed by commander (each
// has --help; usage errors are TM_ERR_USAGE, exit 64: cli/usage.ts). Operator actions reach the daemons
// through their root-only operator sockets (common/operator-socket.ts).
import { readFileSync } from 'node:fs';
import { Command, Option, type CommanderError } from 'commander';
import { didYouMean } from '../common/config.js';
import { tmError, codeOf } from '../common/errors.js';
import { rootLogger } from '../common/log.js';
import { initCa, issue, isRole, ROLES } from '../common/pki.js';
import { listCrl, revoke } from '../common/crl.js';
import type { PointArgs } from './recover.js';
import type { BucketArgs } from './bucket.js';
import { runDaemon } from './run-daemon.js';
import { checkRequired, commandPath, EXIT_USAGE, fromCommander, helpPointer, required, usageError } from './usage.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Commander's camelCase option keys back to the flags' own names (`outDir` → `out-dir`), as the commands use them. */
function flags<T = Record<string, unknown>>(o: Record<string, unknown>): T {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v])) as T;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];
const jsonOpt = (): Option => new Option('--json', 'print only the result, as JSON (docs/OPERATIONS.md, "JSON output")');
const intArg = (name: string) => (v: string): number => {
  if (!/^\d+$/.test(v)) throw usageError(`tidemark`, `${name} must be a whole number, not "${v}"`);
  return Number(v);
};

/** The point selectors recover, failover and test-failover share. */
function pointOptions(c: Command): Command {
  return c
    .option('--seq <n>', 'the point with this sequence number')
    .option('--at <time>', 'the latest point at or before: ISO 8601, epoch ms, or an age ("15m ago")')
    .option('--tag <name>', 'the latest point with this tag')
    .option('--latest', 'the latest retained point');
}

/** Where --from s3://… reads: the store's endpoint, region, credentials, downloads in flight. */
function bucketOptions(c: Command): Command {
  return c
    .option('--from <s3url>', 's3://bucket/prefix: read the bucket tier\'s history, no master target needed')
    .option('--endpoint <url>', 'with --from: the S3 endpoint (default TIDEMARK_S3_ENDPOINT)')
    .option('--region <name>', 'with --from: the S3 region (default us-east-1)')
    .option('--credentials <file>', 'with --from: JSON {accessKeyId, secretAccessKey} (default: TIDEMARK_S3_* or AWS_* environment)')
    .option('--parallel <n>', 'with --from: ranged GETs in flight (default 8)');
}

function build(): Command {
  const program = new Command('tidemark')
    .description('block-level continuous replication: agent -> process server -> master target')
    .version(pkg.version, '-V, --version', 'print the version')
    .usage('<command> [options]')
    .showSuggestionAfterError(true)
    .addHelpText('after', '\nEvery command has --help. Exit status: 0 done, 1 error, 2 could not start, 3 verify found differences, 64 usage error (docs/OPERATIONS.md).');

  for (const [name, what, run] of [
    ['agent', 'run the agent (protected machine)', async (f: string) => { const cfg = (await import('../agent/config.js')).loadAgentConfig(f); const log = rootLogger(`agent ${cfg.name}`); return runDaemon(new (await import('../agent/agent.js')).Agent(cfg, log), log); }],
    ['process-server', 'run the process server (primary site)', async (f: string) => { const cfg = (await import('../process-server/config.js')).loadPsConfig(f); const log = rootLogger(`process-server ${cfg.name}`); return runDaemon(new (await import('../process-server/server.js')).ProcessServer(cfg, log), log); }],
    ['master-target', 'run the master target (secondary site)', async (f: string) => { const cfg = (await import('../master-target/config.js')).loadMtConfig(f); const log = rootLogger(`master-target ${cfg.name}`); return runDaemon(new (await import('../master-target/server.js')).MasterTarget(cfg, log), log); }],
  ] as const) {
    program.command(name).description(what).addOption(required('--config <file>', `the ${name}'s config file`)).action((o: { config: string }) => run(o.config));
  }

  const cs = program.command('config-server').description('run the configuration server: fleet status and history, the management website, recovery plans')
    .addOption(required('--config <file>', 'the configuration server\'s config file'))
    .action(async (o: { config: string }) => (await import('./config-server.js')).runConfigServer(o.config));
  cs.command('hash-password').description('print the scrypt hash of the password given on stdin, for a user entry of the config')
    .action(async () => (await import('./config-server.js')).hashPasswordCommand());

  const pki = program.command('pki').description('certificate authority: init, issue, revoke, crl');
  pki.command('init').description('create a certificate authority in --dir')
    .addOption(required('--dir <dir>', 'where the CA lives')).option('--name <name>', 'the CA\'s common name').option('--force', 'replace an existing CA').addOption(jsonOpt())
    .action(async (o: { dir: string; name?: string; force?: boolean; json?: boolean }) => {
      const r = await initCa(o.dir, { name: o.name, force: o.force });
      console.log(o.json ? JSON.stringify(r) : `CA created: ${r.certPath}`);
    });
  pki.command('issue').description(`issue a key and certificate (role: ${ROLES.join(', ')})`)
    .argument('<role>', ROLES.join(' | ')).argument('<name>', 'the certificate\'s name (the daemon\'s name)')
    .addOption(required('--dir <dir>', 'where the CA lives')).option('--out <dir>', 'where to write the key and certificate (default: --dir)').addOption(jsonOpt())
    .action(async (role: string, name: string, o: { dir: string; out?: string; json?: boolean }) => {
      if (!isRole(role)) throw tmError('TM_ERR_PKI', `unknown role "${role}"; ${didYouMean(role, ROLES)}`);
      const r = await issue(o.dir, role, name, { outDir: o.out });
      console.log(o.json ? JSON.stringify({ role, name, ...r }) : `issued ${role} ${name}: ${r.certPath} ${r.keyPath}`);
    });
  pki.command('revoke').description('add a certificate to the CA\'s revocation list (<dir>/crl.pem); daemons reading it refuse and disconnect that peer within seconds')
    .argument('<cert>', 'the name of a certificate in --dir, or a certificate file')
    .addOption(required('--dir <dir>', 'where the CA lives')).addOption(jsonOpt())
    .action(async (cert: string, o: { dir: string; json?: boolean }) => {
      const r = await revoke(o.dir, cert);
      if (o.json) return console.log(JSON.stringify(r));
      console.log(r.already ? `${r.name} (serial ${r.serial}) was already revoked; ${r.crlPath} unchanged` : `revoked ${r.name} (serial ${r.serial}): ${r.crlPath}; copy it beside ca.crt wherever a daemon runs`);
    });
  pki.command('crl').description('list the revoked certificates')
    .addOption(required('--dir <dir>', 'where the CA lives')).addOption(jsonOpt())
    .action(async (o: { dir: string; json?: boolean }) => {
      const list = await listCrl(o.dir);
      if (o.json) return console.log(JSON.stringify({ revoked: list }, null, 2));
      if (list.length === 0) console.log('no certificate is revoked');
      for (const e of list) console.log(`${e.serial}  ${e.revokedAt}  ${e.name ?? '(certificate not in this CA dir)'}`);
    });

  const serverOpts = (c: Command): Command => c
    .option('--user <name>', 'the configuration server user (or TIDEMARK_USER); the password comes from TIDEMARK_PASSWORD or --password-file')
    .option('--password-file <file>', 'a file whose first line is the password').option('--ca <file>', 'the CA that issued the server\'s certificate (the project\'s ca.crt)');
  serverOpts(program.command('status').description('show replication state of the daemons these configs describe, or of the fleet a configuration server watches (--server)')
    .option('--config <file>', 'a daemon\'s config (repeat for each daemon)', collect, [])
    .option('--watch [secs]', 'look again every secs seconds (default 2) until Ctrl-C; exit status of the last look')
    .option('--server <url>', 'a configuration server\'s website, https://host:port'))
    .addOption(jsonOpt())
    .action(async (o: { config: string[]; server?: string; user?: string; passwordFile?: string; ca?: string; json?: boolean; watch?: string | true }, c: Command) => {
      if (o.server !== undefined) {
        if (o.config.length > 0) throw usageError(c, 'give --server or --config, not both');
        return (await import('./cs-commands.js')).serverStatus({ server: o.server, user: o.user, passwordFile: o.passwordFile, ca: o.ca }, o.json === true);
      }
      if (o.config.length === 0) throw usageError(c, 'status needs at least one --config <file> (or --server <url>)');
      const watch = o.watch === undefined ? undefined : o.watch === true ? 2 : Number(o.watch);
      if (watch !== undefined && !(watch >= 0.2 && watch <= 86_400)) throw usageError(c, `--watch takes seconds between 0.2 and 86400, not "${String(o.watch)}"`);
      return (await import('./status-command.js')).statusCommand(o.config, { json: o.json === true, watchSeconds: watch });
    });

  const plan = program.command('plan').description('recovery plans, run by the configuration server');
  serverOpts(plan.command('run').description('run a recovery plan (--test: as a test failover) and follow its steps; exit 0 if it succeeded')
    .argument('<name>').addOption(required('--server <url>', 'the configuration server, https://host:port')).option('--test', 'a test failover: replication goes on'))
    .addOption(jsonOpt())
    .action(async (name: string, o: { server: string; test?: boolean; user?: string; passwordFile?: string; ca?: string; json?: boolean }) => {
      process.exitCode = await (await import('./cs-commands.js')).planRun(name, o.test === true, { server: o.server, user: o.user, passwordFile: o.passwordFile, ca: o.ca, json: o.json });
    });
  serverOpts(plan.command('cleanup').description('remove the test failovers of a test run')
    .argument('<run>', 'the run\'s number').addOption(required('--server <url>', 'the configuration server, https://host:port')))
    .action(async (run: string, o: { server: string; user?: string; passwordFile?: string; ca?: string }) => (await import('./cs-commands.js')).planCleanup(run, { server: o.server, user: o.user, passwordFile: o.passwordFile, ca: o.ca }));

  program.command('resync').description('bring the replica in step by checksum comparison (only differing blocks travel)')
    .argument('<volume>').addOption(required('--config <file>', 'the agent\'s config'))
    .option('--wait', 'follow the resync to its end, with its progress (bytes, rate, ETA)')
    .option('--follow', 'start none: follow the pass under way (the initial sync, a resync the agent started) to its end')
    .addOption(jsonOpt())
    .action(async (volume: string, o: { config: string; json?: boolean; wait?: boolean; follow?: boolean }, c: Command) => {
      if (o.wait && o.follow) throw usageError(c, '--wait starts a resync and follows it, --follow follows the one under way: give one');
      return (await import('./resync.js')).requestResync(o.config, volume, o.json === true, { wait: o.wait, follow: o.follow });
    });

  program.command('verify').description('compare source and replica by hashes (the replica is re-read); report differing ranges (exit 3 if any), or send them with --repair')
    .argument('<volume>').addOption(required('--config <file>', 'the agent\'s config')).option('--repair', 'send the differing blocks').addOption(jsonOpt())
    .action(async (volume: string, o: { config: string; repair?: boolean; json?: boolean }) => {
      process.exitCode = await (await import('./resync.js')).verify(o.config, volume, o.repair === true, o.json === true);
    });

  program.command('attach-seeded').description('before first replication: adopt the configured replica, seeded out of band')
    .argument('<volume>').addOption(required('--config <file>', 'the master target\'s config')).addOption(jsonOpt())
    .action(async (volume: string, o: { config: string; json?: boolean }) => (await import('./resync.js')).attachSeeded(o.config, volume, o.json === true));

  bucketOptions(program.command('points').description('list a volume\'s retained recovery points, or a consistency group\'s (--group); with --from, the points a bucket alone can rebuild')
    .argument('[volume]').option('--config <file>', 'the master target\'s config')
    .option('--group <name>', 'a consistency group\'s complete points instead of one volume\'s')
    .option('--since <time>', 'points captured at or after: ISO 8601, epoch ms, or an age ("1h ago")')
    .option('--until <time>', 'points captured at or before (same forms)')
    .option('--class <class>', 'crash or app points only')
    .option('--limit <n>', 'the newest n points (after the other filters)')
    .addOption(jsonOpt()))
    .action(async (volume: string | undefined, o: Record<string, unknown>, c: Command) => {
      const a = flags<PointArgs & { config: string }>(o);
      if (o.from !== undefined) {
        if (!volume) throw usageError(c, 'which volume? give its id');
        return (await import('./bucket.js')).bucketPointsCommand(volume, flags<BucketArgs>(o));
      }
      if (a.config === undefined) throw usageError(c, "required option '--config <file>' not given (or --from s3://bucket/prefix)");
      if (a.group !== undefined) return (await import('./recover.js')).groupPointsCommand(a.config, a.group, a);
      if (!volume) throw usageError(c, 'which volume? give its id (or --group <name>)');
      return (await import('./recover.js')).points(a.config, volume, a);
    });

  bucketOptions(pointOptions(program.command('recover').description('materialise a retained point (reflink clone + roll back), verified; --out must be under the config\'s recovery.roots (a device: in recovery.devices, with --device); with --group, every member of a consistency group to one cut; with --from, from a bucket alone')))
    .argument('[volume]').option('--config <file>', 'the master target\'s config')
    .option('--out <file|device>', 'where the point is written').option('--force', 'replace an existing --out file')
    .option('--copy', 'copy instead of a reflink clone').option('--verify <mode>', '"full": re-read every block of the result')
    .option('--device', '--out is a block device (listed in recovery.devices)')
    .option('--group <name>', 'recover every member of this consistency group').option('--out-dir <dir>', 'with --group: the folder for the members')
    .addOption(jsonOpt())
    .action(async (volume: string | undefined, o: Record<string, unknown>, c: Command) => {
      const a = flags<PointArgs & { config: string }>(o);
      if (o.from !== undefined) {
        if (!volume) throw usageError(c, 'which volume? give its id');
        if (a.out === undefined) throw usageError(c, 'recover needs --out <file or device>');
        return (await import('./bucket.js')).bucketRecoverCommand(volume, flags<BucketArgs>(o));
      }
      if (a.config === undefined) throw usageError(c, "required option '--config <file>' not given (or --from s3://bucket/prefix)");
      if (a.group !== undefined) {
        if (a['out-dir'] === undefined) throw usageError(c, 'recover --group needs --out-dir <dir>');
        return (await import('./recover.js')).recoverGroupCommand(a.config, a.group, a);
      }
      if (!volume) throw usageError(c, 'which volume? give its id (or --group <name>)');
      if (a.out === undefined) throw usageError(c, 'recover needs --out <file or device>');
      return (await import('./recover.js')).recover(a.config, volume, a);
    });

  const tf = program.command('test-failover').description('a writable copy of a point for a rehearsal; replication goes on');
  pointOptions(tf.command('start').description('expose a point (default: the latest) writable, as a file or a loop device (--loop)'))
    .argument('<volume>').addOption(required('--config <file>', 'the master target\'s config')).option('--loop', 'attach it as a loop device').addOption(jsonOpt())
    .action(async (volume: string, o: Record<string, unknown>) => (await import('./recover.js')).testFailover(o.config as string, 'start', volume, flags<PointArgs>(o)));
  tf.command('cleanup').description('remove a volume\'s rehearsal copy')
    .argument('<volume>').addOption(required('--config <file>', 'the master target\'s config')).addOption(jsonOpt())
    .action(async (volume: string, o: Record<string, unknown>) => (await import('./recover.js')).testFailover(o.config as string, 'cleanup', volume, flags<PointArgs>(o)));
  tf.command('list').description('the rehearsals running')
    .addOption(required('--config <file>', 'the master target\'s config')).addOption(jsonOpt())
    .action(async (o: Record<string, unknown>) => (await import('./recover.js')).testFailover(o.config as string, 'list', undefined, flags<PointArgs>(o)));

  pointOptions(program.command('failover').description('planned (--planned): drain the source to a final point (or take the one `drain` printed) and recover exactly it (no data loss); else the latest (or named) retained point, without the source'))
    .argument('<volume>').addOption(required('--config <file>', 'the master target\'s config'))
    .option('--out <file|device>', 'where the failed-over volume is written').option('--force', 'replace an existing --out file')
    .option('--device', '--out is a block device (listed in recovery.devices)')
    .option('--planned', 'no data loss: recover the final point of a drain').option('--agent-config <file>', 'with --planned: drain the agent of this config from here')
    .addOption(jsonOpt())
    .action(async (volume: string, o: Record<string, unknown>) => (await import('./failover.js')).failoverCommand('failover', volume, flags(o)));
  program.command('reverse').description('configs to protect the failed-over volume back onto the original one (attached as a seeded replica: only differing blocks travel)')
    .argument('<volume>').addOption(required('--config <file>', 'the master target\'s config')).addOption(required('--agent-config <file>', 'the forward agent\'s config'))
    .addOption(required('--dir <folder>', 'where the reverse configs are written')).option('--pki <dir>', 'the CA that issues the reverse daemons\' certificates')
    .option('--source <path>', 'the failed-over volume (default: the last failover\'s --out)').option('--capture <provider>', 'the reverse agent\'s capture provider')
    .option('--primary-host <host>').option('--secondary-host <host>').option('--ps-port <n>').option('--mt-port <n>')
    .option('--agent-operator-port <n>', 'give the reverse agent a remote operator port (operatorListen) on the secondary host')
    .option('--ps-operator-port <n>', 'give the reverse process server one (status reads only) on the secondary host')
    .option('--mt-operator-port <n>', 'give the reverse master target one on the primary host')
    .option('--operator-clients <names>', 'certificate names (comma-separated) allowed on those ports (default: any operator or config-server certificate)')
    .addOption(jsonOpt())
    .action(async (volume: string, o: Record<string, unknown>) => (await import('./failover.js')).failoverCommand('reverse', volume, flags(o)));
  program.command('failback').description('planned failover back onto the original volume, then resume forward protection')
    .argument('<volume>').addOption(required('--reverse-dir <folder>', 'the folder written by tidemark reverse'))
    .option('--seq <n>', 'the final point `tidemark drain` printed on the reverse agent\'s machine').option('--agent-config <file>', 'the forward agent\'s config: resume it')
    .addOption(jsonOpt())
    .action(async (volume: string, o: Record<string, unknown>) => (await import('./failover.js')).failoverCommand('failback', volume, flags(o)));
  for (const [name, what] of [['drain', 'stop protecting a volume after a final point'], ['resume', 'protect a drained volume again (with a resync)']] as const) {
    program.command(name).description(what).argument('<volume>').addOption(required('--config <file>', 'the agent\'s config')).addOption(jsonOpt())
      .action(async (volume: string, o: Record<string, unknown>) => (await import('./failover.js')).failoverCommand(name, volume, flags(o)));
  }

  program.command('service-units').description('write a hardened systemd unit and a Windows install script per daemon config')
    .addOption(required('--out <dir>', 'where the units are written')).option('--config <file>', 'a daemon\'s config (repeat)', collect, [])
    .option('--role <role>').option('--install-dir <dir>').option('--node <path>').option('--user <user>').addOption(jsonOpt())
    .action(async (o: { out: string; config: string[]; role?: string; installDir?: string; node?: string; user?: string; json?: boolean }) => {
      const files = await (await import('./service-units.js')).serviceUnitsCommand({ out: o.out, configs: o.config, role: o.role, installDir: o.installDir, nodePath: o.node, user: o.user });
      if (o.json) console.log(JSON.stringify({ files }, null, 2));
      else for (const f of files) console.log(`wrote ${f}`);
    });

  // push-install checks its own options (cli/push-install/options.ts) and prints its own --help.
  program.command('push-install').description('install, upgrade (--upgrade) or remove (--uninstall) the agent on a protected machine over SSH (tidemark push-install --help for every option)')
    .helpOption(false).allowUnknownOption().allowExcessArguments()
    .action(async (_o: unknown, c: Command) => (await import('./push-install/cli.js')).pushInstall(c.args));

  program.command('demo').description('replicate a generated volume through all three daemons and prove it')
    .option('--dir <dir>').option('--seconds <n>', 'how long to write', intArg('--seconds')).option('--size-mib <n>', 'the volume\'s size', intArg('--size-mib'))
    .action(async (o: { dir?: string; seconds?: number; sizeMib?: number }) => (await import('./demo.js')).runDemo({ dir: o.dir, seconds: o.seconds, sizeMiB: o.sizeMib }));

  // Every command: commander's complaints become TM_ERR_USAGE (thrown, so main's one exit path applies).
  const wire = (c: Command): void => {
    c.exitOverride((e: CommanderError) => {
      throw fromCommander(c, e) ?? e;
    });
    c.configureOutput({ outputError: () => {} });
    c.commands.forEach(wire);
  };
  wire(program);
  return program;
}

let current = 'tidemark';

async function main(argv: string[]): Promise<void> {
  const program = build();
  program.hook('preAction', (_p, c) => {
    current = commandPath(c);
    checkRequired(c);
  });
  await program.parseAsync(argv, { from: 'user' });
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (String((e as { code?: unknown }).code ?? '').startsWith('commander.')) {
    // --help, --version (printed, exit 0); a command with subcommands given none (its help printed on stderr).
    process.exit((e as CommanderError).exitCode === 0 ? 0 : EXIT_USAGE);
  }
  const code = codeOf(e);
  let msg = (e as Error).message ?? String(e);
  if (code === 'TM_ERR_USAGE' && !msg.includes('--help`)')) msg = `${msg} ${helpPointer(current)}`;
  console.error(`tidemark: ${code}: ${msg}`);
  process.exit(code === 'TM_ERR_USAGE' ? EXIT_USAGE : 1);
});
