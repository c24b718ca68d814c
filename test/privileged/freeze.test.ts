// App-consistent points: pre and post scripts around FIFREEZE make a tagged point on the master target;
// a pre script that hangs is killed at the bound, the filesystem is not left frozen, no tagged point is
// made, and replication goes on.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { pgrep, privileged } from './require-root.js';
import { protectedVolume, protectLab, sh, sleep } from './protected.js';
import { Rng } from '../seed.js';

const rng = new Rng('freeze');

async function mtVolume(lab: { status(n: 'mt'): Promise<Record<string, unknown> | null> }): Promise<Record<string, unknown> | undefined> {
  return ((await lab.status('mt'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
}

t.test('freeze with scripts makes a tagged app-consistent point; a hung script is cut off', async (t) => {
  if (!privileged(t, ['mkfs.xfs', 'mkfs.ext4', 'fsfreeze', 'pgrep'])) return;
  const v = protectedVolume(t, 128);
  const log = path.join(v.xfs, 'scripts.log');
  const freeze = { mountpoint: v.mnt, pre: `echo "pre $TIDEMARK_TAG" >> ${log}`, post: `echo "post $TIDEMARK_TAG" >> ${log}`, timeoutMs: 5000, tag: 'nightly' };
  const lab = await protectLab(t, v, { tracker: 'blocktrace', capture: 'freeze', freeze }, {}, { snapshots: { dir: v.mtSnapshots, keep: 50 } });
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  // Freezing writes the superblock, so a freeze capture always finds a block or two: wait for the end of
  // the initial resync rather than for an idle cycle.
  for (let i = 0; i < 240; i++) {
    const a = ((await lab.status('agent'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
    if (a?.consistentAfterResync === true) break;
    await sleep(500);
  }
  // Random bytes written after the initial resync read the whole device: the point must hold them, not
  // the device's stale cached pages (ext4 writes file data around the block device's page cache).
  const payload = rng.bytes(300_000);
  fs.writeFileSync(path.join(v.mnt, 'data'), payload);
  await sh('sync', []);
  const wroteAt = Date.now();
  let mt: Record<string, unknown> | undefined;
  for (let i = 0; i < 60; i++) {
    mt = await mtVolume(lab);
    const p = mt?.lastAppPoint as { tags?: string[] } | null | undefined;
    if (p?.tags?.includes('nightly') && (p as { atMs: number }).atMs > wroteAt) break;
    await sleep(500);
  }
  const point = mt?.lastAppPoint as { seq: number; tags: string[] } | null;
  t.same(point?.tags, ['nightly'], 'the master target recorded an app-consistent point tagged "nightly"');
  const snap = path.join(v.mtSnapshots, `vol1-${String(point?.seq).padStart(10, '0')}.img`);
  const dumped = path.join(v.xfs, 'data.out');
  await sh('debugfs', ['-R', `dump /data ${dumped}`, snap]);
  t.ok(fs.readFileSync(dumped).equals(payload), 'the point holds the bytes written before it, not stale device cache');
  const lines = fs.readFileSync(log, 'utf8');
  t.match(lines, /pre nightly/, 'the pre script ran');
  t.match(lines, /post nightly/, 'the post script ran');

  // Now a pre script that never returns.
  await lab.stop('agent');
  const cfg = JSON.parse(fs.readFileSync(lab.configs.agent, 'utf8')) as { volumes: Array<Record<string, unknown>> };
  cfg.volumes[0]!.freeze = { ...freeze, pre: 'sleep 600', timeoutMs: 1500, tag: 'hung' };
  fs.writeFileSync(lab.configs.agent, JSON.stringify(cfg));
  const logBefore = (await lab.logLines('agent')).length;
  lab.start('agent');
  // Wait until two cycles have had their hung script cut off: then there were earlier scripts to kill.
  let cut: Record<string, unknown>[] = [];
  for (const end = Date.now() + 60_000; cut.length < 2 && Date.now() < end; await sleep(200)) {
    cut = (await lab.logLines('agent')).slice(logBefore).filter((l) => l.code === 'TM_ERR_CAPTURE');
  }
  t.ok(cut.length >= 2, `the hung script was reported (TM_ERR_CAPTURE), in ${cut.length} cycles`);
  t.match(String(cut[0]?.err), /ran past 1500 ms and was killed/, 'as killed at the bound');
  // The filesystem takes writes (it is not frozen) and they replicate.
  const wrote = sh('sh', ['-c', `echo more > ${path.join(v.mnt, 'after')} && sync`], { timeout: 10_000 });
  await t.resolves(wrote, 'a write to the filesystem completes: it was not left frozen');
  // Each cycle tries again; only the current cycle's script may be alive, the earlier ones were killed.
  t.ok(pgrep('^sleep 600$').length <= 1, 'hung scripts of earlier cycles are gone, children included');
  const now = await mtVolume(lab);
  t.notOk(((now?.lastAppPoint as { tags?: string[] } | null)?.tags ?? []).includes('hung'), 'no point carries the dropped tag');
  t.ok(Number(now?.appliedSeq) > (point?.seq ?? 0), 'replication went on (fuzzy differentials)');
});
