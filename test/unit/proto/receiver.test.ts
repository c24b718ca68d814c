// The receiver's message handling when the peer gets it wrong, on a real socket into the process server's
// real cache (the master target runs the same DiffReceiver): a message before the handshake, a volume not
// served here, a differential for a volume not opened, out of sequence, with a bad extent digest, a short
// extent, or garbage bytes. Each is refused with its code and stores nothing; a retransmission of what is
// already durable is acknowledged again and stored once; the receiver goes on serving a well-behaved peer.
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import { TidemarkError } from '../../../common/errors.js';
import { FramedConnection } from '../../../proto/connection.js';
import { digestStep, hrlName, readHrl, type ExtentRecord } from '../../../proto/hrl.js';
import { PROTOCOL_VERSION } from '../../../proto/messages.js';
import type { InboundSink } from '../../../proto/receiver.js';
import type { Cache } from '../../../process-server/cache.js';
import { Rng } from '../../seed.js';
import { psLoopback, type PsLoopback } from './ps-loopback.js';

const BS = 4096;
const SIZE = 1 << 20;
const rng = new Rng('receiver');

const hello = { hello: { protocolVersion: PROTOCOL_VERSION, minProtocolVersion: 1, capabilities: [], nodeName: 'agent-1', role: 'agent', software: 'test' } };

/** The TidemarkError the next frame raises, or null if a frame arrives instead. */
async function refusal(conn: FramedConnection): Promise<TidemarkError | null> {
  return conn.next().then(() => null, (e: unknown) => (e instanceof TidemarkError ? e : null));
}

/** A connection past the handshake with v1 opened; returns it and the durable sequence the receiver reported. */
async function opened(ps: PsLoopback): Promise<{ conn: FramedConnection; durableSeq: number }> {
  const conn = await ps.connect();
  await conn.send(hello);
  await conn.expect('welcome');
  await conn.send({ openVolume: { volumeId: 'v1', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  return { conn, durableSeq: (await conn.expect('volumeState')).msg.volumeState.durableSeq };
}

interface Sent { extents: Array<{ e: ExtentRecord; data: Buffer }>; digest: number }

function diffOf(count: number): Sent {
  const extents = Array.from({ length: count }, () => {
    const blocks = rng.int(1, 4);
    const data = rng.bytes(blocks * BS);
    return { e: { offset: rng.int(0, SIZE / BS - blocks) * BS, length: data.length, crc32c: crc(data), compression: 'NONE' as const, storedLength: data.length }, data };
  });
  return { extents, digest: extents.reduce((d, x) => digestStep(d, x.e), 0) };
}

/** Send one differential as the sender does, optionally spoiled on the way. */
async function send(conn: FramedConnection, seq: number, d: Sent, spoil: { digest?: number; shortPayload?: boolean; flippedData?: boolean } = {}): Promise<void> {
  await conn.send({ diffBegin: { volumeId: 'v1', seq, startTimeMs: seq, endTimeMs: seq, consistency: 'CRASH', tags: [], extentCount: d.extents.length, flags: 0 } });
  for (const [i, { e, data }] of d.extents.entries()) {
    const last = i === d.extents.length - 1;
    let payload = spoil.shortPayload && last ? data.subarray(0, data.length - 1) : data;
    if (spoil.flippedData && last) (payload = Buffer.from(data))[7]! ^= 0x20; // a sound frame around damaged data
    await conn.send({ extent: { ...e } }, payload);
  }
  await conn.send({ diffEnd: { volumeId: 'v1', seq, extentCount: d.extents.length, extentDigest: spoil.digest ?? d.digest } });
}

/** Every file under the cache directory with its bytes: what "stored nothing" is checked against. */
async function cacheFiles(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await fsp.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile() && !e.name.endsWith('.lock')) out.set(`${e.parentPath}/${e.name}`, (await fsp.readFile(`${e.parentPath}/${e.name}`)).toString('base64'));
  }
  return out;
}

/** A well-behaved peer is still served: it sends the next differential and sees it acknowledged. */
async function stillServes(t: Test, ps: PsLoopback): Promise<void> {
  const { conn, durableSeq } = await opened(ps);
  await send(conn, durableSeq + 1, diffOf(2));
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, durableSeq + 1, 'and the receiver still serves a well-behaved peer');
  conn.destroy();
}

t.test('a message before the handshake is refused with TM_ERR_PROTOCOL', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const conn = await ps.connect();
  await conn.send({ openVolume: { volumeId: 'v1', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  const err = await refusal(conn);
  t.equal(err?.code, 'TM_ERR_PEER_ERROR');
  t.equal(err?.context.peerCode, 'TM_ERR_PROTOCOL', 'the receiver expected a Hello');
  t.equal(ps.cache.stores.get('v1')?.state, null, 'the volume was not adopted');
  await stillServes(t, ps);
});

t.test('a volume not served here is refused alone; the connection goes on for the others', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const conn = await ps.connect();
  await conn.send(hello);
  await conn.expect('welcome');
  await conn.send({ openVolume: { volumeId: 'v9', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  const err = await refusal(conn);
  t.equal(err?.context.peerCode, 'TM_ERR_VOLUME_NOT_ASSIGNED', 'an unknown volume is "not served to you"');
  t.equal(err?.context.volume, 'v9');
  t.notMatch(err?.message, /v1/, 'naming no other volume');
  await conn.send({ openVolume: { volumeId: 'v1', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  t.equal((await conn.expect('volumeState')).msg.volumeState.durableSeq, 0, 'the same connection then opens a served volume');
  // A differential for the refused volume on that connection: a protocol error, and nothing stored.
  const before = await cacheFiles(ps.dir);
  await conn.send({ diffBegin: { volumeId: 'v9', seq: 1, startTimeMs: 1, endTimeMs: 1, consistency: 'CRASH', tags: [], extentCount: 0, flags: 0 } });
  const late = await refusal(conn);
  t.equal(late?.context.peerCode, 'TM_ERR_PROTOCOL', 'a differential for a volume not opened is a protocol error');
  t.strictSame(await cacheFiles(ps.dir), before, 'nothing was stored');
  await stillServes(t, ps);
});

t.test('a volume of impossible geometry is refused with TM_ERR_VOLUME_GEOMETRY and not adopted', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const conn = await ps.connect();
  await conn.send(hello);
  await conn.expect('welcome');
  await conn.send({ openVolume: { volumeId: 'v1', sizeBytes: SIZE, blockSize: 3000, replicationId: 'r1' } });
  t.equal((await refusal(conn))?.context.peerCode, 'TM_ERR_VOLUME_GEOMETRY');
  t.equal(ps.cache.stores.get('v1')?.state, null, 'the volume was not adopted');
});

t.test('a differential out of sequence is refused with TM_ERR_SEQUENCE_GAP and nothing is stored', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  await send(conn, 1, diffOf(3));
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, 1);
  const before = await cacheFiles(ps.dir);
  await send(conn, 3, diffOf(3));
  const err = await refusal(conn);
  t.equal(err?.context.peerCode, 'TM_ERR_SEQUENCE_GAP', 'seq 3 after 1 is a gap');
  t.equal(err?.context.seq, 3);
  t.equal(ps.cache.storedSeq('v1'), 1, 'the stored sequence did not move');
  t.strictSame(await cacheFiles(ps.dir), before, 'no file was written for it');
  await stillServes(t, ps);
});

t.test('a retransmitted differential is acknowledged again and stored once', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  const d = diffOf(3);
  await send(conn, 1, d);
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, 1);
  const before = await cacheFiles(ps.dir);
  await send(conn, 1, d);
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, 1, 'the retransmission is acknowledged');
  t.equal(ps.receiver.stats.duplicatesSkipped, 1, 'as a duplicate');
  t.strictSame(await cacheFiles(ps.dir), before, 'and stored nothing more');
});

t.test('an extent list that does not match its digest is TM_ERR_EXTENT_CHECKSUM; no partial file stays', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  const before = await cacheFiles(ps.dir);
  const d = diffOf(4);
  await send(conn, 1, d, { digest: (d.digest ^ 1) >>> 0 });
  t.equal((await refusal(conn))?.context.peerCode, 'TM_ERR_EXTENT_CHECKSUM');
  t.equal(ps.cache.storedSeq('v1'), 0);
  t.strictSame(await cacheFiles(ps.dir), before, 'the half-written differential was removed');
  await stillServes(t, ps);
});

t.test('raw extent data that do not match their crc in a sound frame are TM_ERR_EXTENT_CHECKSUM; nothing stored', async (t) => {
  // The process server checks a raw extent with the crc its frame check computed: the check still happens.
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  const before = await cacheFiles(ps.dir);
  await send(conn, 1, diffOf(3), { flippedData: true });
  t.equal((await refusal(conn))?.context.peerCode, 'TM_ERR_EXTENT_CHECKSUM');
  t.equal(ps.cache.storedSeq('v1'), 0);
  t.strictSame(await cacheFiles(ps.dir), before, 'nothing was stored');
  await stillServes(t, ps);
});

t.test('a cached differential, its file crc combined from the extents\' crcs, reads back verified', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  const d = diffOf(40);
  await send(conn, 1, d);
  t.equal((await conn.expect('ack')).msg.ack.durableSeq, 1);
  const back = await readHrl(path.join(ps.cache.stores.get('v1')!.dir, hrlName(1)));
  t.equal(back.extents.length, 40);
  t.ok(back.extents.every((e, i) => e.offset === d.extents[i]!.e.offset && e.crc32c === d.extents[i]!.e.crc32c), 'every extent as sent');
});

t.test('an extent carrying fewer bytes than it declares is TM_ERR_PROTOCOL; no partial file stays', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  const before = await cacheFiles(ps.dir);
  await send(conn, 1, diffOf(4), { shortPayload: true });
  t.equal((await refusal(conn))?.context.peerCode, 'TM_ERR_PROTOCOL');
  t.strictSame(await cacheFiles(ps.dir), before);
  await stillServes(t, ps);
});

t.test('garbage bytes in place of a frame: the receiver says why and closes; others are served', async (t) => {
  const ps = await psLoopback(t, 'recv');
  const { conn } = await opened(ps);
  const before = await cacheFiles(ps.dir);
  // Raw bytes on the socket under the framed connection: not a frame (bad magic / checksum).
  conn.socket.write(Buffer.from(rng.bytes(64)));
  const err = await refusal(conn);
  t.equal(err?.code, 'TM_ERR_PEER_ERROR', 'the receiver reported why before closing');
  t.match(String(err?.context.peerCode), /^TM_ERR_(FRAME_CHECKSUM|FRAME_TOO_LARGE|PROTOCOL)$/, `a frame error (${String(err?.context.peerCode)})`);
  await new Promise<void>((resolve) => (conn.socket.destroyed || (conn.socket as net.Socket).readableEnded ? resolve() : conn.socket.once('close', () => resolve())));
  t.pass('and closed the connection');
  t.strictSame(await cacheFiles(ps.dir), before, 'nothing was stored');
  await stillServes(t, ps);
});

/** A gate a test opens: `wait` resolves once `open` was called. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

/** The cache as the receiver's sink, with `committed` (and others) replaced where a test says. */
function around(cache: Cache, over: Partial<InboundSink>): InboundSink {
  return {
    openVolume: (p, ov) => cache.openVolume(p, ov),
    transform: (v, s, e, payload, c) => cache.transform(v, s, e, payload, c),
    committed: (v, s, info) => cache.committed(v, s, info),
    storedSeq: (v) => cache.storedSeq(v),
    ackedSeq: (v) => cache.ackedSeq(v),
    answerQuery: (q, h) => cache.answerQuery(q, h),
    geometryOf: (v) => cache.geometryOf(v),
    ...over,
  };
}

t.test('the next differential is read while the last one commits; acks stay in order and follow durability', async (t) => {
  // Without the commit queue, the receiver waits in seq 1's commit and never reads seq 2: deadlock.
  const secondRead = gate();
  let firstDone = false;
  const ps = await psLoopback(t, 'recv', (cache) => around(cache, {
    transform: (v, s, e, payload, c) => {
      if (s === 2) secondRead.open();
      return cache.transform(v, s, e, payload, c);
    },
    committed: async (v, s, info) => {
      if (s === 1) {
        const held = await Promise.race([secondRead.wait.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20_000))]);
        t.ok(held, 'seq 2 was read while seq 1 was committing');
      }
      await cache.committed(v, s, info);
      if (s === 1) firstDone = true;
    },
  }));
  const { conn } = await opened(ps);
  const acks: number[] = [];
  const d1 = diffOf(3);
  const d2 = diffOf(3);
  await send(conn, 1, d1);
  await send(conn, 2, d2);
  while (acks.at(-1) !== 2) {
    const a = (await conn.expect('ack')).msg.ack.durableSeq;
    if (a === 1) t.ok(firstDone, 'seq 1 acknowledged only once its commit was over');
    acks.push(a);
  }
  t.strictSame(acks, [1, 2], 'acknowledged in order');
  for (const [seq, d] of [[1, d1], [2, d2]] as const) {
    const back = await readHrl(path.join(ps.cache.stores.get('v1')!.dir, hrlName(seq)));
    t.ok(back.extents.every((e, i) => e.crc32c === d.extents[i]!.e.crc32c) && back.extents.length === d.extents.length, `seq ${seq} stored whole`);
  }
});

t.test('a commit that fails: the peer is told, nothing after it is stored, and a reconnect resumes', async (t) => {
  let failOnce = true;
  const ps = await psLoopback(t, 'recv', (cache) => around(cache, {
    committed: async (v, s, info) => {
      if (s === 2 && failOnce) {
        failOnce = false;
        throw new TidemarkError('TM_ERR_DISK_FULL', 'no space left (test)');
      }
      await cache.committed(v, s, info);
    },
  }));
  const { conn } = await opened(ps);
  await send(conn, 1, diffOf(2));
  await send(conn, 2, diffOf(2));
  await send(conn, 3, diffOf(2)).catch(() => {}); // may find the connection closed already
  let err: TidemarkError | null = null;
  for (;;) {
    const next = await conn.next().then((f) => f, (e: unknown) => e);
    if (next instanceof TidemarkError) { err = next; break; }
  }
  t.equal(err?.context.peerCode, 'TM_ERR_DISK_FULL', 'the peer is told why');
  t.equal(err?.context.seq, 2, 'naming the differential');
  const again = await opened(ps); // taken over once the old connection's queue is over
  t.equal(again.durableSeq, 1, 'a reconnect resumes after seq 1');
  t.equal(ps.cache.storedSeq('v1'), 1, 'seq 3, read behind the failed one, was not committed');
  const left = [...(await cacheFiles(ps.dir)).keys()].filter((f) => f.endsWith('.tmp'));
  t.strictSame(left, [], 'no partial file stays');
  await send(again.conn, 2, diffOf(2));
  await send(again.conn, 3, diffOf(2));
  let a = 0;
  while (a < 3) a = (await again.conn.expect('ack')).msg.ack.durableSeq;
  t.equal(ps.cache.storedSeq('v1'), 3, 'and the resent differentials are stored');
});

t.test('a reconnect waits for the old connection\'s commit: the state it is told counts it', async (t) => {
  // Without the wait, the new connection is told durableSeq 0 while seq 1 is still committing, and the
  // sender would stage seq 1 again beside the old writer.
  const release = gate();
  const committing = gate();
  let opens = 0;
  const ps = await psLoopback(t, 'recv', (cache) => around(cache, {
    openVolume: async (p, ov) => {
      const r = await cache.openVolume(p, ov);
      if (++opens === 2) setImmediate(release.open);
      return r;
    },
    committed: async (v, s, info) => {
      if (s === 1) {
        committing.open();
        await release.wait;
      }
      await cache.committed(v, s, info);
    },
  }));
  const first = await opened(ps);
  await send(first.conn, 1, diffOf(3));
  await committing.wait; // seq 1 is read whole and its file durable; the sink's record waits on the gate
  const second = await opened(ps);
  t.equal(second.durableSeq, 1, 'the reconnect is told seq 1 is durable');
  t.equal(ps.cache.storedSeq('v1'), 1);
});

/** A connection past the handshake that opened `volume`. */
async function openedAs(ps: PsLoopback, volume: string): Promise<FramedConnection> {
  const conn = await ps.connect();
  await conn.send(hello);
  await conn.expect('welcome');
  await conn.send({ openVolume: { volumeId: volume, sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  await conn.expect('volumeState');
  return conn;
}

/** `p`'s value, or null when it has not settled within `ms` (a wait that would otherwise hang the test). */
const within = <T>(p: Promise<T>, ms: number): Promise<{ v: T } | null> => Promise.race([p.then((v) => ({ v })), new Promise<null>((r) => setTimeout(() => r(null), ms))]);

t.test('two connections taking each other\'s volumes over do not wait on each other', async (t) => {
  // A owns v1 and opens v2; B owns v2 and opens v1, both at once: each cuts the other and waits only for
  // its read and commits, not for its whole session (which is itself waiting): no deadlock, and the
  // volumes stay usable.
  let opens = 0;
  const both = gate();
  const ps = await psLoopback(t, 'recv', (cache) => around(cache, {
    openVolume: async (p, ov) => {
      const r = await cache.openVolume(p, ov);
      if (++opens === 4) both.open();
      if (opens > 2) await both.wait; // the two takeovers overlap
      return r;
    },
  }));
  const a = await openedAs(ps, 'v1');
  const b = await openedAs(ps, 'v2');
  await a.send({ openVolume: { volumeId: 'v2', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  await b.send({ openVolume: { volumeId: 'v1', sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
  await both.wait;
  for (const v of ['v1', 'v2']) {
    const c = await ps.connect();
    await c.send(hello);
    await c.expect('welcome');
    await c.send({ openVolume: { volumeId: v, sizeBytes: SIZE, blockSize: BS, replicationId: 'r1' } });
    const got = await within(c.expect('volumeState'), 10_000);
    t.ok(got, `a new connection for ${v} is answered`);
    await send(c, 1, diffOf(1)).catch(() => {});
    if (v === 'v1') t.equal((await c.expect('ack')).msg.ack.durableSeq, 1, 'and can send');
    c.destroy();
  }
});

t.test('dropping a volume waits for the commits its connection had queued', async (t) => {
  // The master target drops the connection before discarding damaged staged files: a commit landing
  // after the discard would leave a hole no retransmission fills.
  const release = gate();
  const committing = gate();
  const ps = await psLoopback(t, 'recv', (cache) => around(cache, {
    committed: async (v, s, info) => {
      if (s === 2) {
        committing.open();
        await release.wait;
      }
      await cache.committed(v, s, info);
    },
  }));
  const { conn } = await opened(ps);
  await send(conn, 1, diffOf(1));
  await send(conn, 2, diffOf(1));
  await committing.wait;
  let dropped = false;
  const drop = ps.receiver.dropVolume('v1').then(() => (dropped = true));
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(dropped, 'not over while seq 2 is committing');
  release.open();
  await drop;
  t.equal(ps.cache.storedSeq('v1'), 2, 'over once seq 2 is committed');
});

t.test('a differential committed past a hole (after a discard) is refused and deleted, not taken', async (t) => {
  const release = gate();
  const committing = gate();
  const ps = await psLoopback(t, 'recv', (cache) => around(cache, {
    committed: async (v, s, info) => {
      if (s === 3) {
        committing.open();
        await release.wait;
      }
      await cache.committed(v, s, info);
    },
  }));
  const { conn } = await opened(ps);
  for (const s of [1, 2, 3]) await send(conn, s, diffOf(1));
  await committing.wait;
  const store = ps.cache.stores.get('v1')!;
  await store.discardFrom(2); // a discard that did not wait for the connection
  release.open();
  const again = await opened(ps); // taken over once seq 3's commit is over
  t.strictSame(store.pending(), [1], 'seq 3, past the hole, was not taken');
  t.equal(again.durableSeq, 1, 'the reconnect resumes after seq 1');
  t.notOk(fs.existsSync(store.file(3)), 'and its file is gone (it would be taken at the next start)');
  for (const s of [2, 3]) await send(again.conn, s, diffOf(1));
  let a = 0;
  while (a < 3) a = (await again.conn.expect('ack')).msg.ack.durableSeq;
  t.strictSame(store.pending(), [1, 2, 3], 'the resent differentials fill it');
});
