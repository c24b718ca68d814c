// Data mode's backstop (agent/trackers/data.ts checkMissed) compares the block layer's write and discard
// counts (/sys/block/X/stat) with the programs' own (native/bpf/datacap.bpf.c). The comparison is only
// worth something if the programs count every request exactly once, whatever the kernel does with the
// completion program: on 6.18 it skips it silently for a few completions (native/bpf/diag/README.md).
// Synchronous writes are where that mattered: O_DSYNC/O_SYNC and fsync send an empty REQ_PREFLUSH write
// after the data, a request the flush machinery completes without ever issuing, which the stat counts;
// counted only at its completion, a skipped completion looked like a write the programs never saw
// (issue 13: a rare TM_ERR_TRACKING_LOST, answered by a needless resync). Writes outside the volume's
// range were counted twice (at issue and as "unseen" at completion), which could hide a real miss.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DataCapture, ensureBpffs } from '../../native/datacap.js';
import { attachLoop, makeImage, privileged, run, tempDir } from './require-root.js';
import { sh } from './protected.js';

const MiB = 2 ** 20;

function devNumbers(dev: string): { major: number; minor: number } {
  const [major, minor] = fs.readFileSync(`/sys/class/block/${path.basename(dev)}/dev`, 'utf8').trim().split(':').map(Number) as [number, number];
  return { major, minor };
}

/** Whether a BPF link still exists (its program still attached). */
function linkExists(id: number): boolean {
  try {
    run('bpftool', 'link', 'show', 'id', String(id));
    return true;
  } catch {
    return false;
  }
}

interface Counts {
  writes: number;
  discards: number;
}

const statCounts = (dev: string): Counts => {
  const f = fs.readFileSync(`/sys/class/block/${path.basename(dev)}/stat`, 'utf8').trim().split(/\s+/).map(Number);
  return { writes: f[4]!, discards: f[11]! };
};

/** The programs' counters, read from the pinned control map (no agent holds the capture then). */
function pinnedCounts(pinDir: string): Counts & { ends: number; flushStarts: number } {
  const dump = JSON.parse(run('bpftool', '-j', 'map', 'dump', 'pinned', path.join(pinDir, 'ctl'))) as Array<{ formatted: { value: Record<string, number> } }>;
  const v = dump[0]!.formatted.value;
  return { writes: v.stat_writes!, discards: v.stat_discards!, ends: v.ends!, flushStarts: v.flush_starts ?? 0 };
}

/** Synchronous writes of every kind fio has: O_DIRECT|O_DSYNC, O_SYNC, buffered + fsync after each. */
async function syncWrites(target: string, sizeMiB: number, seed: number): Promise<void> {
  const fio = (...args: string[]): Promise<unknown> => sh('fio', ['--name=w', `--filename=${target}`, `--size=${sizeMiB}m`, '--rw=randwrite', '--bs=4k', '--ioengine=psync', `--randseed=${seed}`, ...args]);
  await fio('--direct=1', '--sync=dsync', '--io_size=4m');
  await fio('--direct=0', '--sync=sync', '--io_size=2m');
  await fio('--direct=0', '--fsync=1', '--io_size=2m');
}

t.test('close(detach): the programs stop (their links go with the pins and our fds)', async (t) => {
  if (!privileged(t, ['bpftool'])) return;
  const dev = attachLoop(t, makeImage(t, 16));
  const pinDir = path.join(ensureBpffs(), `tm-test-close-${process.pid}`);
  t.teardown(() => fs.rmSync(pinDir, { recursive: true, force: true }));
  const cap = DataCapture.open(dev, { pinDir, ...devNumbers(dev), startByte: 0, endByte: 16 * MiB, chunkShift: 12, ringBytes: 1 * MiB, maxQueueBytes: 16 * MiB, fifoPriority: 0, resume: false });
  const links = fs.readdirSync(pinDir).filter((n) => n.startsWith('link')).map((n) => (JSON.parse(run('bpftool', '-j', 'link', 'show', 'pinned', path.join(pinDir, n))) as { id: number }).id);
  t.ok(links.length >= 3 && links.every(linkExists), `${links.length} links attached`);
  cap.close(true);
  t.same(links.filter(linkExists), [], 'no link is left once the capture is closed and detached');
});

t.test('synchronous writes: the programs count each request the block layer counts exactly once', async (t) => {
  if (!privileged(t, ['fio', 'bpftool', 'mkfs.ext4'])) return;
  const size = 64 * MiB;
  const dev = attachLoop(t, makeImage(t, 64));
  const pinDir = path.join(ensureBpffs(), `tm-test-flush-${process.pid}`);
  t.teardown(() => fs.rmSync(pinDir, { recursive: true, force: true })); // the last pins go: the programs stop
  // The volume is the first half of the disk: the writes go to both halves.
  const cap = DataCapture.open(dev, { pinDir, ...devNumbers(dev), startByte: 0, endByte: size / 2, chunkShift: 12, ringBytes: 64 * MiB, maxQueueBytes: 256 * MiB, fifoPriority: 0, resume: false });
  let open = true;
  t.teardown(() => open && cap.close(true));

  // 1. All programs attached.
  let st0 = statCounts(dev);
  const p0 = cap.stats();
  await syncWrites(dev, 60, 1);
  await sh('sync', []);
  let st1 = statCounts(dev);
  const p1 = cap.stats();
  t.comment(JSON.stringify({ stat: st1.writes - st0.writes, programs: p1.statWrites - p0.statWrites, flushStarts: p1.flushStarts - p0.flushStarts, ends: p1.ends - p0.ends }));
  t.ok(st1.writes - st0.writes >= 4000, `${st1.writes - st0.writes} write requests`);
  t.equal(p1.statWrites - p0.statWrites, st1.writes - st0.writes, 'write requests: the programs count what the stat counts');
  t.ok(p1.flushStarts - p0.flushStarts >= 2000, `the empty flush writes after each synchronous write counted at their start (${p1.flushStarts - p0.flushStarts})`);

  // 2. The completion program not running at all: what the kernel does, silently, for a few completions.
  // The agent lets go of the capture (as in a restart) and the completion program's link goes with its pin.
  cap.close(false);
  open = false;
  fs.rmSync(path.join(pinDir, 'link2'));
  st0 = statCounts(dev);
  const c0 = pinnedCounts(pinDir);
  await syncWrites(dev, 60, 2);
  // ext4: discards at mkfs, journal commits (REQ_PREFLUSH|REQ_FUA with data), fsync's flushes.
  run('mkfs.ext4', '-q', '-F', dev);
  const mnt = tempDir(t);
  run('mount', dev, mnt);
  try {
    await syncWrites(path.join(mnt, 'f'), 16, 3);
  } finally {
    run('umount', mnt);
  }
  await sh('sync', []);
  st1 = statCounts(dev);
  const c1 = pinnedCounts(pinDir);
  t.comment(JSON.stringify({ stat: st1.writes - st0.writes, programs: c1.writes - c0.writes, discards: st1.discards - st0.discards, programDiscards: c1.discards - c0.discards, flushStarts: c1.flushStarts - c0.flushStarts }));
  t.equal(c1.ends, c0.ends, 'no completion reached the programs');
  t.ok(st1.discards - st0.discards > 0, 'mkfs discarded');
  t.equal(c1.writes - c0.writes, st1.writes - st0.writes, 'with no completion program, the programs still count every write request the stat counts');
  t.equal(c1.discards - c0.discards, st1.discards - st0.discards, 'and every discard');
});
