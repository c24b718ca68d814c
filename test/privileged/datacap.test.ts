// Data mode's kernel capture on its own (native/datacap.ts): fio writes of every kind to a loop device
// while the ring is read (records in issue order); replaying the records in order onto a copy of the device as it was gives the
// device byte for byte, with no drops at a moderate rate. A tiny ring overruns: drops are counted and
// every dropped range is in the dropped bitmap, so records plus a re-read of those ranges converge.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { crc } from '../../common/checksum.js';
import { BITS_DROPPED, BITS_EPOCH0, DataCapture, DC_DISCARD, DC_HDR, DC_WRITE, DC_ZEROES, ensureBpffs, parseRecords, TAKE_BYTES, type DataRecord } from '../../native/datacap.js';
import { attachLoop, makeImage, privileged } from './require-root.js';
import { sh, sleep } from './protected.js';

const MiB = 2 ** 20;
const SHIFT = 12;

function devNumbers(dev: string): { major: number; minor: number } {
  const [major, minor] = fs.readFileSync(`/sys/class/block/${path.basename(dev)}/dev`, 'utf8').trim().split(':').map(Number) as [number, number];
  return { major, minor };
}

function open(t: { teardown(fn: () => unknown): void }, dev: string, sizeBytes: number, ringBytes: number, maxQueueBytes = 512 * MiB): DataCapture {
  const pinDir = path.join(ensureBpffs(), `tm-test-${process.pid}-${path.basename(dev)}`);
  const cap = DataCapture.open(dev, { pinDir, ...devNumbers(dev), startByte: 0, endByte: sizeBytes, chunkShift: SHIFT, ringBytes, maxQueueBytes, fifoPriority: 0, resume: false });
  t.teardown(() => cap.close(true));
  return cap;
}

/** Write records whose crc the reader thread gave (on CPUs with SSE4.2: all of them), checked in apply(). */
let crcsChecked = 0;

/** Apply records in order onto an open replica file, checking the crc the reader thread gave each write. */
function apply(fd: number, recs: DataRecord[], seen: Set<number>): void {
  for (const r of recs) {
    seen.add(r.seq);
    if (r.flags & DC_WRITE && r.crc !== null) crcsChecked++;
    if (r.flags & DC_WRITE && r.crc !== null && r.crc !== crc(r.data!)) throw new Error(`record ${r.seq}/${r.piece} at ${r.offset}: reader crc ${r.crc} != ${crc(r.data!)}`);
    if (r.flags & DC_WRITE) fs.writeSync(fd, r.data!, 0, r.length, r.offset);
    else if (r.flags & (DC_DISCARD | DC_ZEROES)) fs.writeSync(fd, Buffer.alloc(r.length), 0, r.length, r.offset); // loop reads discarded ranges as zeroes
  }
}

/** Take until every record the program submitted has been applied (a positive signal, not a timeout). */
async function drainAll(cap: DataCapture, fd: number, seen: Set<number>, counted: { records: number }): Promise<void> {
  for (let i = 0; i < 6000; i++) {
    const buf = cap.take(16 * MiB);
    const recs = parseRecords(buf);
    counted.records += recs.length;
    apply(fd, recs, seen);
    // Records the reader could not queue are counted (userDrops) and never arrive.
    const s = cap.stats();
    if (recs.length === 0 && counted.records + s.userDrops >= s.records) return;
    if (recs.length === 0) await sleep(10);
  }
  throw new Error('records never all arrived');
}

/** 4 KiB blocks where two files differ (for the failure report). */
function differing(a: string, b: string): number[] {
  const [x, y] = [fs.readFileSync(a), fs.readFileSync(b)];
  const out: number[] = [];
  for (let i = 0; i < x.length; i += 4096) if (!x.subarray(i, i + 4096).equals(y.subarray(i, i + 4096))) out.push(i / 4096);
  if (out.length) console.error('DIFF', out.length, out.slice(0, 40).join(','), x.subarray(out[0]! * 4096, out[0]! * 4096 + 16).toString('hex'), y.subarray(out[0]! * 4096, out[0]! * 4096 + 16).toString('hex'));
  return out;
}

/** Write-group completions the block layer counted for the device. */
const statWrites = (dev: string): number => Number(fs.readFileSync(`/sys/class/block/${path.basename(dev)}/stat`, 'utf8').trim().split(/\s+/)[4]);

const digest = (file: string): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

t.test('replaying the ring in order gives the device byte for byte; no drops at a moderate rate', async (t) => {
  if (!privileged(t, ['fio'])) return;
  const size = 128 * MiB;
  const image = makeImage(t, 128);
  // Start from random contents, so a missed write cannot hide behind zeroes.
  await sh('dd', ['if=/dev/urandom', `of=${image}`, 'bs=1M', 'count=128', 'conv=notrunc,fsync', 'status=none']);
  const replica = `${image}.replica`;
  fs.copyFileSync(image, replica);
  const dev = attachLoop(t, image);
  const cap = open(t, dev, size, 64 * MiB);
  const statBase = statWrites(dev);
  const progBase = cap.stats().statWrites;
  const rfd = fs.openSync(replica, 'r+');
  t.teardown(() => fs.closeSync(rfd));
  const seen = new Set<number>();
  const counted = { records: 0 };
  let stop = false;
  let paused = false;
  const reader = (async () => {
    while (!stop) {
      if (paused) {
        await sleep(5);
        continue;
      }
      const recs = parseRecords(cap.take(16 * MiB));
      counted.records += recs.length;
      apply(rfd, recs, seen);
      if (recs.length === 0) await sleep(5);
    }
  })();
  const fio = (...args: string[]): Promise<unknown> => sh('fio', ['--name=w', `--filename=${dev}`, '--size=120m', '--randseed=7', '--rate=40m', '--ioengine=psync', '--time_based=0', ...args]);
  await fio('--rw=randwrite', '--bs=4k', '--direct=1', '--io_size=24m');
  await fio('--rw=randwrite', '--bs=64k', '--direct=1', '--io_size=48m');
  await fio('--rw=randwrite', '--bs=4k', '--direct=0', '--io_size=16m', '--end_fsync=1');
  await fio('--rw=randwrite', '--bsrange=512-256k', '--direct=1', '--io_size=32m', '--ioengine=libaio', '--iodepth=8');
  await fio('--rw=randtrim', '--bs=64k', '--io_size=8m');
  // Records left to queue up, then taken in TAKE_BYTES pieces by takeRecords, in order, up to its bound.
  paused = true;
  await sleep(20); // the reader's take in progress, if any, is applied
  await fio('--rw=randwrite', '--bs=64k', '--direct=1', '--io_size=12m', '--randseed=11');
  await sleep(300); // the reader thread queues what the ring holds (it polls every few ms)
  const piled = cap.takeRecords(8 * MiB);
  const piledBytes = piled.reduce((n, r) => n + DC_HDR + (r.data?.length ?? 0), 0);
  t.ok(piledBytes > TAKE_BYTES && piledBytes <= 8 * MiB, `takeRecords took ${piledBytes} bytes in several pieces, within its bound`);
  counted.records += piled.length;
  apply(rfd, piled, seen);
  paused = false;
  await fio('--rw=randwrite', '--bs=4k', '--direct=0', '--io_size=16m', '--end_fsync=1', '--randseed=9');
  stop = true;
  await reader;
  await sh('sync', []);
  await drainAll(cap, fs.openSync(replica, 'r+'), seen, counted);
  const s = cap.stats();
  t.comment(JSON.stringify(s));
  t.equal(s.drops, 0, 'no completion dropped');
  t.equal(s.userDrops, 0, 'no record dropped by the reader');
  t.equal(s.errors, 0, 'no write failed');
  t.ok(s.completions > 10000, `${s.completions} completions captured`);
  fs.fsyncSync(rfd);
  // Capture is at issue: every request the block layer completed was seen (the kernel was measured to
  // skip completion-side programs silently, never the issue side; see native/bpf/diag/README.md).
  const missed = statWrites(dev) - statBase - (s.statWrites - progBase);
  t.ok(missed <= 0, `every write request the block layer completed was captured at issue (${missed})`);
  t.equal(s.unseen, 0, 'no completion of a request whose issue was not captured');
  t.equal(digest(replica), digest(image), 'replica from the ring equals the device', { differing: differing(replica, image).slice(0, 20) });
  t.ok(crcsChecked > 0 || !fs.readFileSync('/proc/cpuinfo', 'utf8').includes(' sse4_2'), `the reader's crc checked on ${crcsChecked} write records`);
  // Every write is also in the current epoch's bitmap (what an agent that died before journaling re-reads).
  const bits = cap.bitmap(BITS_EPOCH0 + (s.epoch & 1));
  t.ok(bits.some((b) => b !== 0), 'writes marked in the epoch bitmap');
});

t.test('a tiny ring overruns: drops counted, dropped ranges in the bitmap; re-reading them converges', async (t) => {
  if (!privileged(t, ['fio'])) return;
  const size = 64 * MiB;
  const image = makeImage(t, 64);
  await sh('dd', ['if=/dev/urandom', `of=${image}`, 'bs=1M', 'count=64', 'conv=notrunc,fsync', 'status=none']);
  const replica = `${image}.replica`;
  fs.copyFileSync(image, replica);
  const dev = attachLoop(t, image);
  // 64 KiB of ring and a 256 KiB queue: heavy writes cannot all fit.
  const cap = open(t, dev, size, 64 * 1024, 256 * 1024);
  await sh('fio', ['--name=w', `--filename=${dev}`, '--size=60m', '--rw=randwrite', '--bs=64k', '--direct=1', '--ioengine=libaio', '--iodepth=16', '--io_size=64m', '--randseed=3']);
  await sh('sync', []);
  const rfd = fs.openSync(replica, 'r+');
  t.teardown(() => fs.closeSync(rfd));
  await drainAll(cap, rfd, new Set(), { records: 0 });
  const s = cap.stats();
  t.comment(JSON.stringify(s));
  t.ok(s.drops + s.userDrops > 0, `drops counted (${s.drops} in the kernel, ${s.userDrops} by the reader)`);
  t.not(digest(replica), digest(image), 'records alone do not give the device: something was dropped');
  // Re-read every dropped chunk from the device (after the records), as the tracker does.
  const bits = cap.bitmap(BITS_DROPPED);
  const dfd = fs.openSync(dev, 'r');
  t.teardown(() => fs.closeSync(dfd));
  let chunks = 0;
  const buf = Buffer.alloc(1 << SHIFT);
  for (let w = 0; w < bits.length / 8; w++) {
    const word = bits.readBigUInt64LE(w * 8);
    if (word === 0n) continue;
    for (let b = 0; b < 64; b++) {
      if (((word >> BigInt(b)) & 1n) === 0n) continue;
      const off = (w * 64 + b) << SHIFT;
      fs.readSync(dfd, buf, 0, buf.length, off);
      fs.writeSync(rfd, buf, 0, buf.length, off);
      chunks++;
    }
  }
  t.ok(chunks > 0, `${chunks} dropped chunks re-read`);
  cap.clearBits(BITS_DROPPED, bits);
  t.ok(cap.bitmap(BITS_DROPPED).every((b) => b === 0), 'clearBits cleared exactly what was read');
  fs.fsyncSync(rfd);
  t.equal(digest(replica), digest(image), 'records plus re-read dropped ranges equal the device', { differing: differing(replica, image).slice(0, 20) });
});
