// The capabilities the generated units grant are enough, and needed: the three daemons run with exactly
// the CapabilityBoundingSet (and NoNewPrivileges) of their units — the agent with blocktrace and freeze,
// the process server and master target with none (the master target cloning snapshots) — and a file
// written on the protected filesystem arrives, byte for byte, in an app-consistent point. Without
// CAP_SYS_ADMIN the agent cannot freeze. (systemd is not PID 1 here: setpriv applies the same limits.)
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { TIDEMARK_BIN, type DaemonName } from '../../lab/lab.js';
import { systemdUnit } from '../../cli/service-units.js';
import { privileged, tool } from './require-root.js';
import { protectedVolume, protectLab, sh, sleep } from './protected.js';
import { Rng } from '../seed.js';

const rng = new Rng('service-units');

const ROLE: Record<DaemonName, 'agent' | 'process-server' | 'master-target'> = { agent: 'agent', ps: 'process-server', mt: 'master-target' };

/** The unit's CapabilityBoundingSet as setpriv's --bounding-set, and the same as /proc's CapBnd mask. */
function boundingSet(unit: string): { arg: string; mask: bigint; caps: string[] } {
  const line = /^CapabilityBoundingSet=(.*)$/m.exec(unit);
  if (!line) throw new Error('the unit does not restrict capabilities');
  const caps = line[1]!.split(/\s+/).filter(Boolean);
  const bits: Record<string, number> = { CAP_DAC_READ_SEARCH: 2, CAP_NET_BIND_SERVICE: 10, CAP_SYS_ADMIN: 21 };
  const mask = caps.reduce((m, c) => m | (1n << BigInt(bits[c] ?? Number.NaN)), 0n);
  return { arg: ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(','), mask, caps };
}

t.test('daemons run with the capability bounding sets their units declare', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'fsfreeze', 'debugfs', 'setpriv', 'blockdev'])) return;
  const v = protectedVolume(t, 64);
  const lab = await protectLab(t, v, { tracker: 'blocktrace', capture: 'freeze', freeze: { mountpoint: v.mnt, tag: 'svc' } }, {}, { snapshots: { dir: v.mtSnapshots, keep: 1000 } });
  const procs = new Map<DaemonName, ChildProcess>();
  const stop = async (n: DaemonName): Promise<number | null> => {
    const c = procs.get(n);
    procs.delete(n);
    if (!c || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null;
    const done = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
    c.kill('SIGTERM');
    return done;
  };
  // Registered after the volume's teardowns, so it runs before them (the daemons hold the mount).
  t.teardown(async () => {
    for (const n of ['agent', 'ps', 'mt'] as const) await stop(n);
  });
  const start = (n: DaemonName, bset: string): ChildProcess => {
    const log = fs.openSync(path.join(lab.opts.dir, `${n}.log`), 'a');
    const c = spawn(tool('setpriv')!, ['--no-new-privs', '--bounding-set', bset, '--inh-caps', '-all', '--', process.execPath, TIDEMARK_BIN, ROLE[n], '--config', lab.configs[n]], { cwd: lab.opts.dir, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    procs.set(n, c);
    return c;
  };

  const sets = {} as Record<DaemonName, ReturnType<typeof boundingSet>>;
  for (const n of ['mt', 'ps', 'agent'] as const) {
    const unit = systemdUnit({ configPath: lab.configs[n] });
    t.match(unit, /^NoNewPrivileges=yes$/m, `${n}: NoNewPrivileges`);
    sets[n] = boundingSet(unit);
    start(n, sets[n].arg);
  }
  t.strictSame(sets.agent.caps, ['CAP_SYS_ADMIN', 'CAP_DAC_READ_SEARCH'], 'agent: CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH only');
  t.strictSame(sets.ps.caps, [], 'process server: no capabilities');
  t.strictSame(sets.mt.caps, [], 'master target: no capabilities');
  for (const n of ['mt', 'ps', 'agent'] as const) {
    for (const end = Date.now() + 60_000; (await lab.status(n)) === null && Date.now() < end;) await sleep(100);
    const status = fs.readFileSync(`/proc/${procs.get(n)!.pid}/status`, 'utf8');
    t.equal(BigInt(`0x${/^CapBnd:\s*(\w+)$/m.exec(status)![1]}`), sets[n].mask, `${n}: runs with that bounding set`);
    t.match(status, /^NoNewPrivs:\s*1$/m, `${n}: and no new privileges`);
  }

  // A file written after the first resync must reach an app-consistent point, snapshotted on the master target.
  const mtVol = async (): Promise<Record<string, unknown> | undefined> => ((await lab.status('mt'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
  for (let i = 0; i < 240; i++) {
    const a = ((await lab.status('agent'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
    if (a?.consistentAfterResync === true) break;
    await sleep(500);
  }
  // Written while the agent runs: it drops the device's cached pages before each read (agent/volume.ts),
  // since ext4 writes file data around the device's cache.
  const data = rng.bytes(300_000);
  fs.writeFileSync(path.join(v.mnt, 'payload'), data);
  await sh('sync', []);
  const after = Date.now();
  let point: { seq: number; atMs: number; tags: string[] } | undefined;
  for (let i = 0; i < 120 && !point; i++) {
    const p = (await mtVol())?.lastAppPoint as { seq: number; atMs: number; tags: string[] } | null | undefined;
    if (p && p.atMs > after && p.tags.includes('svc')) point = p;
    else await sleep(500);
  }
  t.ok(point, 'an app-consistent point (FIFREEZE under the agent\'s bounding set) captured after the write was applied');
  if (point) {
    const snap = path.join(v.mtSnapshots, `vol1-${String(point.seq).padStart(10, '0')}.img`);
    const out = path.join(lab.opts.dir, 'payload.out');
    await sh(tool('debugfs')!, ['-R', `dump /payload ${out}`, snap]);
    const got = fs.readFileSync(out);
    let bad = 0;
    for (let o = 0; o < data.length; o += 1024) if (!got.subarray(o, o + 1024).equals(data.subarray(o, o + 1024))) bad++;
    t.ok(got.equals(data), `the file in the master target's snapshot of that point equals what was written (${bad} KiB differ, ${got.length} bytes)`);
  }

  // Control: the same agent without CAP_SYS_ADMIN cannot freeze, so the unit's grant is needed. It must
  // keep running and report the freeze refused with EPERM; failing in some other way (an exit at start)
  // would show nothing about the freeze.
  await stop('agent');
  const before = (await lab.logLines('agent')).length;
  const bare = start('agent', '-all');
  let refusal: Record<string, unknown> | undefined;
  for (const end = Date.now() + 60_000; !refusal && bare.exitCode === null && Date.now() < end; await sleep(250)) {
    refusal = (await lab.logLines('agent')).slice(before).find((l) => l.code === 'TM_ERR_CAPTURE');
  }
  t.equal(bare.exitCode, null, 'the agent without CAP_SYS_ADMIN keeps running');
  t.equal(refusal?.msg, 'app-consistent point dropped; this differential is fuzzy', 'its point is dropped');
  t.equal(refusal?.cause, 'TM_ERR_NATIVE', 'by the native freeze call');
  t.match(String(refusal?.err), /^freeze of volume vol1: freeze .*: EPERM: freezing a filesystem needs root \(CAP_SYS_ADMIN\)/, 'refused with EPERM: the freeze needs CAP_SYS_ADMIN');
});
