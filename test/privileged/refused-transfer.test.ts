// A differential the master target cannot store (its staging filesystem is full) is refused; the process
// server must not send it again and again at full speed: it backs off (each refusal in a row waits twice
// as long), `tidemark status` names the refusal and its cause, the refused bytes are counted apart from
// the received ones, and once there is room the volume replicates and the replica equals the source.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab, TIDEMARK_BIN } from '../../lab/lab.js';
import { makeImage, sha256, waitFor } from '../integration/helpers.js';
import { privileged, run, tempDir } from './require-root.js';

type Snap = Record<string, unknown>;

t.test('a differential refused for want of disk is retried with back-off, and said', async (t) => {
  if (!privileged(t, ['mount'])) return;
  const dir = tempDir(t);
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 16, 12);
  // The master target's state (where differentials are staged) on a 3 MiB tmpfs: a 12 MiB initial sync cannot fit.
  const mtState = path.join(dir, 'mt-state');
  await fsp.mkdir(mtState);
  run('mount', '-t', 'tmpfs', '-o', 'size=3m', 'tm-refused', mtState);
  t.teardown(() => { try { run('umount', '-l', mtState); } catch { /* already gone */ } });
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 500 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');

  const forwarder = async (): Promise<Snap> => ((await lab.status('ps'))?.forwarders as Record<string, Snap> | undefined)?.['mt-1'] ?? {};
  const refusal = async (): Promise<Snap | undefined> => ((await forwarder()).refusals as Record<string, Snap> | undefined)?.vol1;
  await waitFor(async () => (await refusal()) !== undefined, 60_000, 'the master target refuses vol1');
  const first = (await refusal())!;
  t.equal(first.code, 'TM_ERR_DISK_FULL', `refused for want of disk: ${String(first.message)}`);
  const sentAtFirst = Number((await forwarder()).bytesSent);

  // 20 s: with 2, 4, 8 s between tries, at most 4 more; the old behaviour re-sent it several times a second.
  await waitFor(async () => Number((await refusal())?.count) >= 3, 30_000, 'a third refusal in a row');
  const started = Number(first.since);
  await new Promise((r) => setTimeout(r, Math.max(0, started + 20_000 - Date.now())));
  const after = (await refusal())!;
  const fwd = await forwarder();
  const tries = Number(after.count);
  t.ok(tries >= 3 && tries <= 5, `refused ${tries} times in 20 s: backing off`);
  t.ok(Number(after.retryAt) - Date.now() > 2000 || tries >= 4, 'the next try is seconds away');
  const resent = Number(fwd.bytesSent) - sentAtFirst;
  // Each try may carry the whole 12 MiB differential before the refusal arrives.
  t.ok(resent <= 4 * (13 << 20), `${resent} bytes re-sent in 20 s (${tries} tries), not a stream of them`);
  t.ok(Number(fwd.bytesRefused) > 0, 'the process server counts the bytes refused');
  const mtRecv = (await lab.status('mt'))?.receiver as Snap;
  t.ok(Number(mtRecv.bytesRefused) > 0, 'the master target counts refused bytes apart');
  t.equal(Number(mtRecv.bytesReceived), 0, '...and none as received');

  // Status names the refusal and its cause; exit 3.
  const st = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile(process.execPath, [TIDEMARK_BIN, 'status', '--config', lab.configs.agent, '--config', lab.configs.ps, '--config', lab.configs.mt, '--json'], { cwd: dir }, (err, out) => resolve({ code: err ? Number(err.code) : 0, out }));
  });
  t.equal(st.code, 3, 'status exits 3');
  const vol = (JSON.parse(st.out) as { volumes: Array<{ problems: Array<{ state: string; cause: string }> }> }).volumes[0]!;
  const p = vol.problems.find((x) => x.state === 'REFUSED by mt-1');
  t.match(p?.cause, /TM_ERR_DISK_FULL/, `status: REFUSED by mt-1 with its cause (${JSON.stringify(vol.problems)})`);

  // Room again: the volume goes through at its next try, and the replica equals the source.
  run('mount', '-o', 'remount,size=64m', mtState);
  const since = Date.now();
  await lab.waitConverged(since, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'replica equals the source once there is room');
  t.equal((await refusal()), undefined, 'the refusal is gone from status once taken');
});
