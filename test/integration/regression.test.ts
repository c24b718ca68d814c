// No silent loss when the agent's state goes back in time (issue 11 item 1): a state directory restored
// from an older copy, or a journal deleted by hand, must end in a resync and a replica equal to the source,
// never in unsent differentials deleted as acknowledged.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Lab } from '../../lab/lab.js';
import { makeImage, scratchDir, sha256, sleep } from './helpers.js';

const SIZE_MIB = 16;
const BS = 4096;

async function lab(t: Test, name: string): Promise<{ lab: Lab; source: string; replica: string }> {
  const dir = await scratchDir(t, name);
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE_MIB, 8);
  const l = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 200, maxDiffBytes: 1 << 20 } });
  t.teardown(() => l.stopAll());
  return { lab: l, source, replica };
}

async function agentVolume(l: Lab): Promise<Record<string, unknown> | undefined> {
  return ((await l.status('agent'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Write random data to these blocks of the source. */
async function writeBlocks(source: string, blocks: number[]): Promise<void> {
  const fh = await fsp.open(source, 'r+');
  for (const b of blocks) await fh.write(randomBytes(BS), 0, BS, b * BS);
  await fh.close();
}

/** The agent has scanned the source after `sinceMs` and found nothing more to journal. */
async function journaledAll(l: Lab, sinceMs: number): Promise<void> {
  await until('the agent to journal every write', async () => {
    const v = await agentVolume(l);
    return v !== undefined && Number(v.lastCycleAt) > sinceMs && v.lastCycleBytes === 0 && !(v.resync as { active: boolean }).active;
  });
}

t.test('agent state restored from an older copy: what it journals after the restore is not deleted as acknowledged', async (t) => {
  const { lab: l, source, replica } = await lab(t, 'rollback');
  l.start('mt');
  l.start('ps');
  l.start('agent');
  await l.waitConverged(Date.now(), 120_000);
  await l.stop('agent');
  const backup = path.join(l.opts.dir, 'agent-state.copy');
  await fsp.cp(l.stateDirs.agent, backup, { recursive: true });

  // The timeline that will be forgotten: many small differentials, so the process server's sequence runs
  // far ahead of the copy's.
  l.start('agent');
  for (let i = 0; i < 25; i++) {
    const at = Date.now();
    await writeBlocks(source, [100, 101]);
    await journaledAll(l, at);
  }
  await l.waitConverged(Date.now(), 120_000);
  const before = Number((await agentVolume(l))!.lastSeq);
  await l.stop('agent');

  // Roll the agent's state back; it journals new writes while the process server is away.
  await l.stop('ps');
  await fsp.rm(l.stateDirs.agent, { recursive: true, force: true });
  await fsp.cp(backup, l.stateDirs.agent, { recursive: true });
  l.start('agent');
  await until('the restored agent to come up', async () => (await agentVolume(l)) !== undefined);
  const at = Date.now();
  await writeBlocks(source, Array.from({ length: 16 }, (_, i) => 1000 + i * 37));
  await journaledAll(l, at);
  const restored = await agentVolume(l);
  t.ok(Number(restored!.lastSeq) < before, `the restored agent numbers from its old state (${String(restored!.lastSeq)} < ${before})`);

  const since = Date.now();
  l.start('ps');
  await l.waitConverged(since, 180_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');
  const mt = ((await l.status('mt'))!.volumes as Record<string, unknown>[])[0]!;
  t.equal(mt.consistent, true, 'and is consistent, after a resync');
  t.ok((await l.logLines('ps')).some((x) => x.code === 'TM_ERR_SOURCE_REGRESSED'), 'the process server detected the regression (TM_ERR_SOURCE_REGRESSED)');
  t.ok((await l.logLines('agent')).some((x) => x.msg === 'agent state regressed; setting the journal aside and resyncing'), 'the agent set its journal aside and resynced');
});

t.test('journal/ deleted by hand: the differentials it held are found again by a resync', async (t) => {
  const { lab: l, source, replica } = await lab(t, 'journal-lost');
  l.start('mt');
  l.start('ps');
  l.start('agent');
  await l.waitConverged(Date.now(), 120_000);
  await l.stop('ps');
  const at = Date.now();
  await writeBlocks(source, Array.from({ length: 16 }, (_, i) => 2000 + i * 41));
  await journaledAll(l, at);
  const v = await agentVolume(l);
  t.ok(Number(v!.journalFiles) > 0, 'the writes wait in the journal');
  await l.stop('agent');
  await fsp.rm(path.join(l.stateDirs.agent, 'volumes', 'vol1', 'journal'), { recursive: true, force: true });

  const since = Date.now();
  l.start('ps');
  l.start('agent');
  await l.waitConverged(since, 180_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');
  const mt = ((await l.status('mt'))!.volumes as Record<string, unknown>[])[0]!;
  t.equal(mt.consistent, true, 'and is consistent');
  t.ok((await l.logLines('agent')).some((x) => x.msg === 'journal lost: what it held never reached the process server; resyncing'), 'the agent noticed the lost journal');
});
