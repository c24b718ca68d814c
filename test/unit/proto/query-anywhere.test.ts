// Hash queries are not held behind differentials (docs/PROTOCOL.md §6, capability "query-anywhere"): the
// receiver answers a query as it arrives, between the extents of a differential too, and while the
// differential before it waits to be taken; a sender whose receiver takes them there sends its queries
// between extents, one whose receiver does not keeps them between differentials.
import net from 'node:net';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import { silentLogger } from '../../../common/log.js';
import { FramedConnection } from '../../../proto/connection.js';
import { digestStep, type Diff } from '../../../proto/hrl.js';
import type { HashQuery } from '../../../proto/messages.js';
import { DiffSender, type OutboundVolume } from '../../../proto/sender.js';
import { psLoopback } from './ps-loopback.js';
import { Rng } from '../../seed.js';

const rng = new Rng('query-anywhere');
const BS = 4096;
const SIZE = 64 << 20;

/** The process server's real cache, whose master target answers every query with range 1 differing. */
async function receiving(t: Test) {
  const asked: HashQuery[] = [];
  const ps = await psLoopback(t, 'qa', undefined, { query: async (_v, q) => { asked.push({ ...q, requestId: 0 }); return { volumeId: q.volumeId, requestId: 0, differing: [1] }; } });
  const conn = await ps.connect();
  await conn.send({ hello: { protocolVersion: 1, minProtocolVersion: 1, capabilities: ['query-anywhere'], nodeName: 'agent-1', role: 'agent', software: 'test' } });
  t.same((await conn.expect('welcome')).msg.welcome.capabilities, ['query-anywhere'], 'the receiver takes queries anywhere');
  await conn.send({ openVolume: { volumeId: 'v1', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  await conn.expect('volumeState');
  return { ps, conn, asked };
}

/**
 * `p`, or a failure naming `what` if it does not come within 10 s: a receiver that holds the answer fails
 * here in seconds instead of at the runner's timeout (loopback answers in milliseconds).
 */
async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not come within 10 s`)), 10_000); });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

const query = (requestId: number) => ({ hashQuery: { volumeId: 'v1', requestId, rangeBlocks: 256, ranges: [0, 1], afterSeq: 0, reread: false } });
const extent = (i: number, data: Buffer) => ({ offset: i * BS, length: data.length, crc32c: crc(data), compression: 'NONE' as const, storedLength: data.length });

t.test('a query between the extents of a differential is answered before the differential ends, which is still taken', async (t) => {
  const { ps, conn, asked } = await receiving(t);
  const blocks = Array.from({ length: 4 }, () => rng.bytes(BS));
  await conn.send({ diffBegin: { volumeId: 'v1', seq: 1, startTimeMs: 1, endTimeMs: 2, consistency: 'FUZZY', tags: [], extentCount: 4, flags: 1 } });
  await conn.send({ extent: extent(0, blocks[0]!) }, blocks[0]!);
  await conn.send({ extent: extent(1, blocks[1]!) }, blocks[1]!);
  await conn.send(query(7), Buffer.alloc(16));
  const answer = await within(conn.expect('hashAnswer'), 'the answer');
  t.match(answer.msg.hashAnswer, { requestId: 7, differing: [1] }, 'answered in the middle of the differential');
  t.equal(asked.length, 1, 'relayed to the master target');
  await conn.send({ extent: extent(2, blocks[2]!) }, blocks[2]!);
  await conn.send({ extent: extent(3, blocks[3]!) }, blocks[3]!);
  const digest = blocks.reduce((d, b, i) => digestStep(d, extent(i, b)), 0);
  await conn.send({ diffEnd: { volumeId: 'v1', seq: 1, extentCount: 4, extentDigest: digest } });
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, 1, 'the differential is taken and acknowledged');
  t.equal(ps.cache.storedSeq('v1'), 1);
});

t.test('a query behind a differential the receiver is not taking yet is answered meanwhile', async (t) => {
  const { ps, conn } = await receiving(t);
  ps.receiver.setFlow({ paused: true, volumes: ['v1'], reason: 'full', delayMs: 0, full: true });
  const b = rng.bytes(BS);
  await conn.send({ diffBegin: { volumeId: 'v1', seq: 1, startTimeMs: 1, endTimeMs: 2, consistency: 'FUZZY', tags: [], extentCount: 1, flags: 1 } });
  await conn.send({ extent: extent(0, b) }, b);
  await conn.send({ diffEnd: { volumeId: 'v1', seq: 1, extentCount: 1, extentDigest: digestStep(0, extent(0, b)) } });
  await conn.send(query(9), Buffer.alloc(16));
  t.match((await within(conn.expect('hashAnswer'), 'the answer')).msg.hashAnswer, { requestId: 9, differing: [1] }, 'answered while the differential before it is held');
  t.equal(ps.cache.storedSeq('v1'), 0, 'which is not taken yet');
  ps.receiver.setFlow({ paused: false, volumes: [], reason: '', delayMs: 0, full: false });
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, 1, 'and is once there is room');
});

/**
 * A receiver played by the test: it answers the handshake with `caps`, opens the volume, then stops
 * reading once the differential has begun (the sender is then stuck in the middle of it), and reports the
 * order of the frames that follow once it reads again.
 */
async function orderSeen(t: Test, caps: string[]): Promise<string[]> {
  const data = rng.bytes(1 << 20);
  const count = 48; // 48 MiB: far more than the socket buffers hold, so the sender cannot be done
  const extents = Array.from({ length: count }, (_, i) => ({ offset: i * data.length, length: data.length, crc32c: crc(data), compression: 'NONE' as const, storedLength: data.length, data }));
  const diff: Diff = { header: { volumeId: 'v1', seq: 1, startTimeMs: 1, endTimeMs: 2, volumeSize: SIZE, blockSize: BS, consistency: 'FUZZY', flags: 1, tags: [] }, extents, dataBytes: count * data.length, extentDigest: extents.reduce((d, e) => digestStep(d, e), 0) };
  const vol: OutboundVolume = {
    volumeId: 'v1',
    describe: () => ({ sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' }),
    pending: async () => [1],
    load: async () => diff,
    acked: async () => {},
  };
  let serverConn: FramedConnection | null = null;
  let sender: DiffSender | null = null;
  const begun = new Promise<FramedConnection>((resolve) => {
    const server = net.createServer((socket) => {
      const conn = new FramedConnection(socket, 'agent-1');
      serverConn = conn;
      void (async () => {
        await conn.expect('hello');
        await conn.send({ welcome: { protocolVersion: 1, capabilities: caps, nodeName: 'ps' } });
        await conn.expect('openVolume');
        await conn.send({ volumeState: { volumeId: 'v1', durableSeq: 0 } });
        await conn.expect('diffBegin');
        socket.pause();
        resolve(conn);
      })();
    });
    server.listen(0, '127.0.0.1');
    t.teardown(async () => {
      serverConn?.destroy();
      await sender?.close();
      await new Promise<void>((r) => server.close(() => r()));
    });
    sender = new DiffSender({ nodeName: 'agent-1', role: 'agent', log: silentLogger(), volumes: () => [vol], connect: async () => {
      await new Promise((r) => (server.listening ? r(null) : server.once('listening', r)));
      const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      await new Promise((r) => socket.once('connect', r));
      return { socket, peerName: 'ps' };
    } });
    sender.start();
  });
  const s = sender as unknown as DiffSender;
  const conn = await begun;
  t.ok(s.stats.bytesSent < count * data.length, 'the sender is in the middle of the differential');
  const answered = s.query({ volumeId: 'v1', rangeBlocks: 256, ranges: [0], afterSeq: 0, reread: false }, Buffer.alloc(8));
  conn.socket.resume();
  const seen: string[] = [];
  for (;;) {
    const f = await conn.next();
    if (f.msg.body !== 'extent' || seen.at(-1) !== 'extent') seen.push(f.msg.body);
    if ('hashQuery' in f.msg) await conn.send({ hashAnswer: { volumeId: 'v1', requestId: f.msg.hashQuery.requestId, differing: [0] } });
    if (seen.includes('diffEnd') && seen.includes('hashQuery')) break;
  }
  t.same((await answered).differing, [0], 'the query is answered');
  return seen;
}

t.test('a sender sends a query between extents where the receiver takes it there', async (t) => {
  t.same(await orderSeen(t, ['query-anywhere']), ['extent', 'hashQuery', 'extent', 'diffEnd'], 'the query goes out in the middle of the differential');
});

t.test('a sender keeps queries between differentials where the receiver does not list query-anywhere', async (t) => {
  t.same(await orderSeen(t, []), ['extent', 'diffEnd', 'hashQuery'], 'the query waits for the differential to end');
});
