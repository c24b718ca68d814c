// A consistency group's cycle when a cut cannot be taken or a member fails: a pre script that fails, a
// freeze the system refuses, a member whose journal is full. The cut is dropped for every member (fuzzy,
// no group point, counted), every member still journals its writes, post scripts still run, a failing
// member is reported alone and catches up at the next cycle. Two real volumes (replicator-lab.ts) with
// freeze captures whose "mountpoints" are plain directories: the addon refuses them before any FIFREEZE,
// so nothing on this machine is ever frozen.
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { codeOf } from '../../../common/errors.js';
import { FreezeCapture } from '../../../agent/capture/freeze.js';
import type { AgentVolumeConfig } from '../../../agent/config.js';
import { ConsistencyGroup, type GroupMember } from '../../../agent/group.js';
import type { Journal } from '../../../agent/journal.js';
import { errnoError, failOn } from '../faults.js';
import { lab, log, replay, replicator, scribble, type Lab } from './replicator-lab.js';

interface Member { l: Lab; journal: Journal; member: GroupMember }

/** A group member: its own volume, a freeze capture on a plain directory, scripts that leave marks. */
async function member(t: Test, id: string, marks: string, pre: string, opts: { journalFull?: boolean } = {}): Promise<Member> {
  const l = await lab(t, `group-${id}`, id);
  const mp = path.join(l.dir, 'mnt');
  await fsp.mkdir(mp);
  const freeze = { mountpoint: mp, pre, post: `touch ${path.join(marks, `post-${id}`)}`, timeoutMs: 5000, tag: 'db' };
  const { r, journal } = await replicator(t, l, {
    capture: (_c, volume) => new FreezeCapture(id, volume, freeze, l.dir, log),
    ...(opts.journalFull ? { journal: (j: Journal) => ({ write: failOn(j.write.bind(j), 1, () => errnoError('ENOSPC')) }) } : {}),
  });
  const config = { id, path: l.source, tracker: 'scan', capture: 'freeze', freeze } as unknown as AgentVolumeConfig;
  return { l, journal, member: { replicator: r, config } };
}

async function setup(t: Test, pres: [string, string], opts: { journalFull?: string } = {}): Promise<{ members: Member[]; group: ConsistencyGroup; errors: Array<[string, unknown]>; marks: () => string[] }> {
  const first = await lab(t, 'group-marks', 'marks');
  const marks = path.join(first.dir, 'marks');
  await fsp.mkdir(marks);
  const members = [await member(t, 'data', marks, pres[0], { journalFull: opts.journalFull === 'data' }), await member(t, 'log', marks, pres[1], { journalFull: opts.journalFull === 'log' })];
  const errors: Array<[string, unknown]> = [];
  const group = new ConsistencyGroup({ name: 'db', volumes: ['data', 'log'] }, members.map((m) => m.member), { stateDir: first.dir, log, onError: (id, e) => errors.push([id, e]) });
  return { members, group, errors, marks: () => fs.readdirSync(marks).sort() };
}

async function consistency(m: Member): Promise<string[]> {
  return Promise.all(m.journal.pending().map(async (s) => (await m.journal.load(s, async () => {})).header.consistency));
}

async function intact(t: Test, members: Member[]): Promise<void> {
  for (const m of members) t.ok((await replay(m.journal)).equals(await fsp.readFile(m.l.source)), `${m.l.id}: its journal replayed is its volume`);
}

t.test('a pre script that fails: the cut is dropped for every member, which journal fuzzy; posts run', async (t) => {
  const s = await setup(t, ['true', 'exit 5']);
  const out = await s.group.cycle();
  t.equal(out.length, 2, 'both members cycled');
  t.strictSame(s.errors, [], 'no member failed');
  t.equal(s.group.stats.failures, 1, 'the failed cut is counted');
  t.match(s.group.stats.lastError, /pre script or freeze of group db: pre script \(exit\) failed \(exit status 5\)/);
  t.equal(s.group.lastPoint, null, 'no group point');
  for (const m of s.members) t.strictSame(await consistency(m), ['FUZZY'], `${m.l.id}: journaled, fuzzy`);
  t.strictSame(s.marks(), ['post-data', 'post-log'], 'the post scripts let both applications go');
  await intact(t, s.members);
});

t.test('a freeze the system refuses: the same, and nothing is left frozen', async (t) => {
  const s = await setup(t, ['true', 'true']);
  await s.group.cycle();
  t.equal(s.group.stats.failures, 1);
  t.match(s.group.stats.lastError, /not the root of a mount/, 'the freeze refusal is what is reported');
  t.equal(s.group.stats.cuts, 0, 'no cut was taken');
  for (const m of s.members) t.strictSame(await consistency(m), ['FUZZY']);
  t.strictSame(s.marks(), ['post-data', 'post-log']);
  await intact(t, s.members);
});

t.test('a member whose journal is full is reported alone; the other journals; it catches up next cycle', async (t) => {
  const s = await setup(t, ['true', 'true'], { journalFull: 'log' });
  await s.group.cycle();
  t.equal(s.errors.length, 1, 'one member failed');
  t.equal(s.errors[0]?.[0], 'log', 'the one whose journal is full');
  t.equal(codeOf(s.errors[0]?.[1]), 'TM_ERR_DISK_FULL');
  t.equal(s.members[0]!.journal.lastSeq, 1, 'the other member journaled its writes');
  t.equal(s.members[1]!.journal.lastSeq, 0);
  for (const m of s.members) await scribble(m.l);
  await s.group.cycle();
  t.equal(s.errors.length, 1, 'no new failure');
  await intact(t, s.members);
});

t.test('open refuses a state directory on a filesystem the group freezes', async (t) => {
  const s = await setup(t, ['true', 'true']);
  const err = await s.group.open().then(() => null, (e: unknown) => e);
  t.equal(codeOf(err), 'TM_ERR_CONFIG_INVALID');
  t.match((err as Error).message, /the agent's stateDir .* is on .*, which group "db" freezes/);
});
