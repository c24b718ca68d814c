// A sender gives a differential's pooled bodies (Extent.release) back only once the receiver has
// acknowledged it: not when its frames are written, not for a differential still unacknowledged, and
// never for one whose session ended first (a resend reads the file; the collector takes the rest).
// The receiver is played by the test over a real socket, so it decides when each ack goes out.
import net from 'node:net';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import { silentLogger } from '../../../common/log.js';
import { FramedConnection } from '../../../proto/connection.js';
import { digestStep, type Diff } from '../../../proto/hrl.js';
import { DiffSender, POOLED_HOLD_BYTES, type OutboundVolume } from '../../../proto/sender.js';
import { Rng } from '../../seed.js';

const rng = new Rng('sender-release');
const BS = 4096;
const SIZE = 64 << 20;

/** Differential `seq` of `n` extents of `size` bytes, each with a release that counts its calls in `released[seq]`. */
function pooledDiff(seq: number, n: number, released: Map<number, number>, size = BS): Diff {
  const extents = Array.from({ length: n }, (_, i) => {
    const data = size === BS ? rng.bytes(BS) : Buffer.alloc(size, seq);
    return { offset: i * size, length: size, crc32c: crc(data), compression: 'NONE' as const, storedLength: size, data, release: () => released.set(seq, (released.get(seq) ?? 0) + 1) };
  });
  return { header: { volumeId: 'v1', seq, startTimeMs: seq, endTimeMs: seq + 1, volumeSize: SIZE, blockSize: BS, consistency: 'CRASH', flags: 0, tags: [] }, extents, dataBytes: n * size, extentDigest: extents.reduce((d, e) => digestStep(d, e), 0) };
}

/** A sender of differentials 1..count to a receiver the test plays; `sessions` yields each connection. */
function harness(t: Test, diffs: Map<number, Diff>) {
  const sessions: FramedConnection[] = [];
  let arrived: ((c: FramedConnection) => void) | null = null;
  const server = net.createServer((socket) => {
    const conn = new FramedConnection(socket, 'agent-1');
    sessions.push(conn);
    arrived?.(conn);
  });
  server.listen(0, '127.0.0.1');
  let acked = 0;
  const vol: OutboundVolume = {
    volumeId: 'v1',
    describe: () => ({ sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' }),
    pending: async () => [...diffs.keys()].filter((s) => s > acked).sort((a, b) => a - b),
    load: async (seq) => diffs.get(seq)!,
    acked: async (seq) => {
      acked = seq;
    },
  };
  const sender = new DiffSender({ nodeName: 'agent-1', role: 'ps', log: silentLogger(), volumes: () => [vol], window: 8, connect: async () => {
    await new Promise((r) => (server.listening ? r(null) : server.once('listening', r)));
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    return { socket, peerName: 'mt' };
  } });
  t.teardown(async () => {
    for (const c of sessions) c.destroy();
    await sender.close();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const next = (): Promise<FramedConnection> => new Promise((resolve) => (arrived = resolve));
  return { sender, next };
}

/** Play the receiver's side of a session up to the open volume, durable at `durableSeq`. */
async function accept(conn: FramedConnection, durableSeq: number): Promise<void> {
  await conn.expect('hello');
  await conn.send({ welcome: { protocolVersion: 1, capabilities: [], nodeName: 'mt' } });
  await conn.expect('openVolume');
  await conn.send({ volumeState: { volumeId: 'v1', durableSeq } });
}

/** Read one whole differential; returns its sequence number. */
async function readDiff(conn: FramedConnection): Promise<number> {
  const begin = (await conn.expect('diffBegin')).msg.diffBegin;
  for (let i = 0; i < begin.extentCount; i++) await conn.expect('extent');
  await conn.expect('diffEnd');
  return begin.seq;
}

/** Until `cond` holds, checked every 10 ms, for at most 10 s (loopback answers in milliseconds). */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within 10 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('pooled bodies go back at the ack that covers their differential, once each, and not before', async (t) => {
  const released = new Map<number, number>();
  const diffs = new Map([1, 2, 3].map((s) => [s, pooledDiff(s, 4, released)]));
  const { sender, next } = harness(t, diffs);
  const session = next();
  sender.start();
  const conn = await session;
  await accept(conn, 0);
  t.same([await readDiff(conn), await readDiff(conn), await readDiff(conn)], [1, 2, 3], 'all three sent in order');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(released.size, 0, 'nothing is given back for being written: no ack yet');

  await conn.send({ ack: { volumeId: 'v1', durableSeq: 2 } });
  await until(() => released.get(2) === 4, 'the release of 1 and 2');
  t.equal(released.get(1), 4, 'differential 1: every extent given back once');
  t.equal(released.get(2), 4, 'differential 2: every extent given back once');
  t.notOk(released.has(3), 'differential 3, not acknowledged, is still held');

  await conn.send({ ack: { volumeId: 'v1', durableSeq: 2 } });
  await conn.send({ ack: { volumeId: 'v1', durableSeq: 3 } });
  await until(() => released.get(3) === 4, 'the release of 3');
  t.same([...released.entries()].sort(), [[1, 4], [2, 4], [3, 4]], 'a repeated ack gives nothing back twice');
});

t.test('a differential whose session ends before its ack is not given back, nor on a later session', async (t) => {
  const released = new Map<number, number>();
  const diffs = new Map([[1, pooledDiff(1, 3, released)]]);
  const { sender, next } = harness(t, diffs);
  let session = next();
  sender.start();
  const first = await session;
  await accept(first, 0);
  t.equal(await readDiff(first), 1, 'sent');
  session = next();
  first.destroy(); // gone before acknowledging: whatever the socket still held of it may be in flight
  const second = await session;
  // The receiver had made it durable before the connection broke: the new session opens past it.
  await accept(second, 1);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(released.size, 0, 'nothing given back: the session that sent it never saw its ack');
  t.equal(sender.stats.diffsSent, 1, 'and nothing resent');
});

t.test('a sender holds at most POOLED_HOLD_BYTES of sent bodies; past that they are left to the collector', async (t) => {
  const released = new Map<number, number>();
  const MiB = 1 << 20;
  const perDiff = POOLED_HOLD_BYTES / MiB / 2 - 4; // two fit, the third does not
  const diffs = new Map([1, 2, 3].map((s) => [s, pooledDiff(s, perDiff, released, MiB)]));
  const { sender, next } = harness(t, diffs);
  const session = next();
  sender.start();
  const conn = await session;
  await accept(conn, 0);
  t.same([await readDiff(conn), await readDiff(conn), await readDiff(conn)], [1, 2, 3], 'all three sent');
  await conn.send({ ack: { volumeId: 'v1', durableSeq: 3 } });
  await until(() => released.get(2) === perDiff, 'the release of 1 and 2');
  await new Promise((r) => setTimeout(r, 100));
  t.same([...released.entries()].sort(), [[1, perDiff], [2, perDiff]], 'the two held are given back; the third was never held');
});

t.test('a regression drops what was sent under the old numbering without giving it back', async (t) => {
  const released = new Map<number, number>();
  const diffs = new Map([[1, pooledDiff(1, 2, released)]]);
  const { sender, next } = harness(t, diffs);
  const session = next();
  sender.start();
  const conn = await session;
  await conn.expect('hello');
  await conn.send({ welcome: { protocolVersion: 1, capabilities: ['resync-needed'], nodeName: 'mt' } });
  await conn.expect('openVolume');
  await conn.send({ volumeState: { volumeId: 'v1', durableSeq: 0 } });
  t.equal(await readDiff(conn), 1, 'sent');
  // The receiver holds a history this one does not continue: numbering goes on after its 5.
  await conn.send({ resyncNeeded: { volumeId: 'v1', reason: 'test', regression: true, durableSeq: 5 } });
  await new Promise((r) => setTimeout(r, 100));
  await conn.send({ ack: { volumeId: 'v1', durableSeq: 6 } });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(released.size, 0, 'an ack under the new numbering gives back nothing sent under the old');
});
