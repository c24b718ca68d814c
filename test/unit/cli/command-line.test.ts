// The `tidemark` command line (cli/tidemark.ts, commander): --help of every subcommand, --version, usage
// errors (exit 64, TM_ERR_USAGE, a did-you-mean, a pointer to --help instead of the whole usage), `status`
// exit statuses, and --json output parseable, against a real lab of three daemons.
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../../lab/lab.js';
import { makeImage, scratchDir } from '../../integration/helpers.js';

interface Run { code: number; stdout: string; stderr: string }

function tm(args: string[], cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, ...args], { cwd, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const SUBCOMMANDS = [
  ['agent'], ['process-server'], ['master-target'], ['pki'], ['pki', 'init'], ['pki', 'issue'], ['pki', 'revoke'], ['pki', 'crl'],
  ['status'], ['resync'], ['verify'], ['attach-seeded'], ['points'], ['recover'], ['test-failover'], ['test-failover', 'start'],
  ['test-failover', 'cleanup'], ['test-failover', 'list'], ['failover'], ['reverse'], ['failback'], ['drain'], ['resume'],
  ['service-units'], ['push-install'], ['demo'],
];

t.test('every subcommand has --help: exit 0, its usage on stdout', async (t) => {
  for (const c of SUBCOMMANDS) {
    const r = await tm([...c, '--help']);
    t.equal(r.code, 0, `${c.join(' ')} --help exits 0`);
    t.match(r.stdout, /usage: tidemark/i, `${c.join(' ')} --help prints its usage`);
    t.equal(r.stderr, '', `${c.join(' ')} --help: nothing on stderr`);
  }
});

t.test('--version prints package.json\'s version', async (t) => {
  const pkg = JSON.parse(readFileSync(path.join(path.dirname(TIDEMARK_BIN), '..', '..', 'package.json'), 'utf8')) as { version: string };
  const r = await tm(['--version']);
  t.equal(r.code, 0);
  t.equal(r.stdout.trim(), pkg.version);
});

t.test('plain tidemark prints the usage and exits 64', async (t) => {
  const r = await tm([]);
  t.equal(r.code, 64);
  t.match(r.stderr, /Usage: tidemark <command>/);
  t.match(r.stderr, /failover/, 'the commands are listed');
});

t.test('usage errors: exit 64, TM_ERR_USAGE, a did-you-mean, a short pointer to --help', async (t) => {
  const cases: Array<[string[], RegExp, string]> = [
    [['statsu'], /unknown command 'statsu' \(Did you mean status\?\)/, 'tidemark'],
    [['recover', 'vol1', '--config', 'x.json', '--forse'], /unknown option '--forse' \(Did you mean --force\?\)/, 'tidemark recover'],
    [['status', '--confg', 'x.json'], /unknown option '--confg' \(Did you mean --config\?\)/, 'tidemark status'],
    [['points', 'vol1', '--config', 'x.json', '--out', 'y'], /unknown option '--out'/, 'tidemark points'],
    [['verify', '--config', 'x.json'], /missing required argument 'volume'/, 'tidemark verify'],
    [['recover', 'vol1'], /required option '--config <file>' not given/, 'tidemark recover'],
    [['pki', 'issue', 'agent', 'a1'], /required option '--dir <dir>' not given/, 'tidemark pki issue'],
    [['push-install', '--hots', 'h'], /unknown option '--hots'; did you mean "--host"\?/, 'tidemark push-install'],
    [['status'], /status needs at least one --config/, 'tidemark status'],
  ];
  for (const [args, msg, cmd] of cases) {
    const r = await tm(args);
    const what = `tidemark ${args.join(' ')}`;
    t.equal(r.code, 64, `${what}: exit 64`);
    t.match(r.stderr, /^tidemark: TM_ERR_USAGE: /, `${what}: TM_ERR_USAGE`);
    t.match(r.stderr, msg, `${what}: says what is wrong`);
    t.ok(r.stderr.includes(`(see \`${cmd} --help\`)`), `${what}: points to ${cmd} --help`);
    t.ok(r.stderr.trim().split('\n').length <= 2, `${what}: short, not the whole usage:\n${r.stderr}`);
    t.equal(r.stdout, '', `${what}: nothing on stdout`);
  }
});

t.test('pki commands take --json: one document on stdout each', async (t) => {
  const dir = await scratchDir(t, 'cli-pki-json');
  const ca = path.join(dir, 'ca');
  const parse = async (args: string[]): Promise<Record<string, unknown>> => {
    const r = await tm([...args, '--json']);
    t.equal(r.code, 0, `tidemark ${args.join(' ')} --json: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };
  t.match(await parse(['pki', 'init', '--dir', ca]), { certPath: path.join(ca, 'ca.crt') }, 'pki init');
  t.match(await parse(['pki', 'issue', 'agent', 'a1', '--dir', ca]), { role: 'agent', name: 'a1', certPath: /a1\.crt$/, keyPath: /a1\.key$/ }, 'pki issue');
  t.same(await parse(['pki', 'crl', '--dir', ca]), { revoked: [] }, 'pki crl, nothing revoked');
  t.match(await parse(['pki', 'revoke', 'a1', '--dir', ca]), { name: 'a1', already: false }, 'pki revoke');
  t.match(((await parse(['pki', 'crl', '--dir', ca])).revoked as unknown[]).length, 1, 'pki crl lists it');
});

t.test('status with a daemon unreachable: exit 4, and --json says which', async (t) => {
  const dir = await scratchDir(t, 'cli-unreachable');
  const r = await tm(['status', '--config', path.join(dir, 'nothing.json'), '--json']);
  t.equal(r.code, 4);
  const j = JSON.parse(r.stdout) as { schema: number; ok: boolean; exit: number; daemons: Array<{ reachable: boolean }> };
  t.equal(j.schema, 1);
  t.equal(j.ok, false);
  t.equal(j.exit, 4);
  t.equal(j.daemons[0]!.reachable, false);
});

t.test('--json output of a running lab parses, and status exit codes follow health', async (t) => {
  const dir = await scratchDir(t, 'cli-json');
  const source = path.join(dir, 'source.img');
  await makeImage(source, 8, 8);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img'), mt: { retention: { window: '1h' } } }], agent: { cycleIntervalMs: 200 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  const since = Date.now();
  await lab.waitConverged(since, 120_000);
  const all = ['--config', lab.configs.agent, '--config', lab.configs.ps, '--config', lab.configs.mt];
  const json = async (args: string[], code = 0): Promise<Record<string, unknown>> => {
    const r = await tm([...args, '--json'], dir);
    t.equal(r.code, code, `tidemark ${args[0]} --json exits ${code}: ${r.stderr}`);
    try {
      return JSON.parse(r.stdout) as Record<string, unknown>;
    } catch {
      t.fail(`tidemark ${args.join(' ')} --json: stdout is not only JSON:\n${r.stdout}`);
      return {};
    }
  };
  // The volume converges before the status reports it consistent; wait for a healthy status (positive signal).
  let st = await json(['status', ...all], (await tm(['status', ...all], dir)).code);
  for (let i = 0; i < 100 && st.ok !== true; i++) {
    await new Promise((r) => setTimeout(r, 200));
    st = JSON.parse((await tm(['status', ...all, '--json'], dir)).stdout) as Record<string, unknown>;
  }
  t.equal(st.ok, true, `status --json: all ok ${JSON.stringify(st.volumes)}`);
  t.same((st.volumes as Array<{ volume: string; health: string }>).map((v) => [v.volume, v.health]), [['vol1', 'ok']]);
  t.equal((await tm(['status', ...all], dir)).code, 0, 'status exits 0 when all is well');

  const v = await json(['verify', 'vol1', '--config', lab.configs.agent]);
  t.equal(v.differingBlocks, 0, 'verify --json: nothing differs');
  t.equal(v.exit, 0);
  const pts = await json(['points', 'vol1', '--config', lab.configs.mt]);
  t.ok(Array.isArray(pts.points), 'points --json');
  const list = await json(['test-failover', 'list', '--config', lab.configs.mt]);
  t.same(list.rehearsals, [], 'test-failover list --json');

  const rs = await json(['resync', 'vol1', '--config', lab.configs.agent]);
  t.equal(rs.started, true, 'resync --json');

  // The agent stopped: status exits 4 and names the daemon not reachable.
  await lab.stop('agent');
  const down = await tm(['status', ...all, '--json'], dir);
  t.equal(down.code, 4, 'a daemon unreachable: status exits 4');
  const daemons = (JSON.parse(down.stdout) as { daemons: Array<{ config: string; reachable: boolean }> }).daemons;
  t.same(daemons.filter((x) => !x.reachable).map((x) => x.config), [lab.configs.agent], 'the agent is the one not reachable');
  const table = await tm(['status', ...all], dir);
  t.match(table.stdout, /^vol1 .*AGENT UNREACHABLE: agent agent-1: not running/m, 'the table says why vol1 is not ok');
});

t.test('status fits COLUMNS, and --watch looks again until stopped', async (t) => {
  const dir = await scratchDir(t, 'cli-watch');
  const source = path.join(dir, 'source.img');
  await makeImage(source, 8, 4);
  // A replica of another size: the master target refuses the volume; status must say so, not "resync 0%".
  await makeImage(path.join(dir, 'replica.img'), 4, 0);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica: path.join(dir, 'replica.img') }], agent: { cycleIntervalMs: 200 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  const all = ['--config', lab.configs.agent, '--config', lab.configs.ps, '--config', lab.configs.mt];
  let vol: { ok: boolean; problems: Array<{ state: string; cause: string }> } | undefined;
  for (let i = 0; i < 150; i++) {
    const r = await tm(['status', ...all, '--json'], dir);
    vol = (JSON.parse(r.stdout) as { volumes: Array<{ ok: boolean; problems: Array<{ state: string; cause: string }> }> }).volumes[0];
    if (vol?.problems.some((p) => p.state.startsWith('REFUSED'))) {
      t.equal(r.code, 3, 'a refused volume: exit 3');
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const refused = vol?.problems.find((p) => p.state.startsWith('REFUSED'));
  t.equal(refused?.state, 'REFUSED by mt-1', `the refusal is a problem of vol1: ${JSON.stringify(vol)}`);
  t.match(refused?.cause, /TM_ERR_VOLUME_GEOMETRY: .*replica\.img holds 4194304 bytes; the source has 8388608/, 'and its cause names the geometry');

  const narrow = await new Promise<Run>((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, 'status', ...all], { cwd: dir, env: { ...process.env, COLUMNS: '80' } }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
  t.same(narrow.stdout.split('\n').filter((l) => l.length > 80), [], 'COLUMNS=80: no line longer');
  t.match(narrow.stdout.replace(/\s+/g, ' '), /REFUSED by mt-1: mt-1 reported TM_ERR_VOLUME_GEOMETRY/, 'the cause, wrapped, in the table');

  // --watch on a pipe: one look after another; SIGTERM ends it with the last look's exit status.
  const child = spawn(process.execPath, [TIDEMARK_BIN, 'status', ...all, '--watch', '0.3', '--json'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  for (let i = 0; i < 200 && out.split('\n').filter(Boolean).length < 3; i++) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGTERM');
  t.equal(await exited, 3, '--watch ends with the last look\'s exit status');
  const looks = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { schema: number; at: number });
  t.ok(looks.length >= 3, `three looks or more, one JSON document a line (${looks.length})`);
  t.ok(looks.every((l, i) => l.schema === 1 && (i === 0 || l.at > looks[i - 1]!.at)), 'each a later look');
  const bad = await tm(['status', ...all, '--watch', '0'], dir);
  t.equal(bad.code, 64, '--watch 0 is a usage error');
});
