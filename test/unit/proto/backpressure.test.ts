// Backpressure at the receiver, on a real socket, with the process server's real cache as the sink:
// a peer that announced the "backpressure" capability is told to pause (also when it connects while
// the receiver is paused) and what it already began is still taken; a peer that did not (an older
// sender) is never sent the new message: its differential is simply not taken until there is room,
// then acknowledged as usual.
import path from 'node:path';
import t, { type Test } from 'tap';
import { crc } from '../../../common/checksum.js';
import type { Cache } from '../../../process-server/cache.js';
import { FramedConnection } from '../../../proto/connection.js';
import { digestStep, readHrl } from '../../../proto/hrl.js';
import type { DiffReceiver } from '../../../proto/receiver.js';
import { psLoopback } from './ps-loopback.js';
import { Rng } from '../../seed.js';

const rng = new Rng('backpressure');

const PAUSED = { paused: true, volumes: ['v1'], reason: 'cache 5.0% free', delayMs: 0, full: false };
const OPEN = { paused: false, volumes: [] as string[], reason: '', delayMs: 0, full: false };

async function setup(t: Test): Promise<{ receiver: DiffReceiver; cache: Cache; connect: (caps: string[]) => Promise<FramedConnection> }> {
  const ps = await psLoopback(t, 'bp');
  const { receiver, cache } = ps;
  const connect = async (caps: string[]): Promise<FramedConnection> => {
    const conn = await ps.connect();
    await conn.send({ hello: { protocolVersion: 1, minProtocolVersion: 1, capabilities: caps, nodeName: 'agent-1', role: 'agent', software: 'test' } });
    const w = await conn.expect('welcome');
    t.strictSame(w.msg.welcome.capabilities, caps.filter((c) => c !== 'unknown'), 'welcome lists the capabilities both have');
    return conn;
  };
  return { receiver, cache, connect };
}

async function openVolume(conn: FramedConnection): Promise<number> {
  await conn.send({ openVolume: { volumeId: 'v1', sizeBytes: 1 << 20, blockSize: 4096, replicationId: 'r1' } });
  return (await conn.expect('volumeState')).msg.volumeState.durableSeq;
}

/** One differential of `extents` random 4 KiB blocks, as a sender writes it. */
async function sendDiff(conn: FramedConnection, seq: number, extents: number): Promise<Buffer[]> {
  const blocks = Array.from({ length: extents }, () => rng.bytes(4096));
  await conn.send({ diffBegin: { volumeId: 'v1', seq, startTimeMs: 1, endTimeMs: 2, consistency: 'CRASH', tags: [], extentCount: extents, flags: 0 } });
  let digest = 0;
  for (const [i, b] of blocks.entries()) {
    const e = { offset: i * 4096, length: 4096, crc32c: crc(b), compression: 'NONE' as const, storedLength: 4096 };
    digest = digestStep(digest, e);
    await conn.send({ extent: e }, b);
  }
  await conn.send({ diffEnd: { volumeId: 'v1', seq, extentCount: extents, extentDigest: digest } });
  return blocks;
}

/**
 * The Backpressure frame the receiver owes now. Bounded, so a receiver that never sends it fails here in
 * seconds instead of at the runner's timeout; the bound is generous (loopback answers in milliseconds).
 */
async function signalled(conn: FramedConnection, ms = 10_000): Promise<Awaited<ReturnType<typeof conn.expect<'backpressure'>>>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no Backpressure frame within ${ms} ms`)), ms); });
  try {
    return await Promise.race([conn.expect('backpressure'), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next frame, or null if none comes within `ms`. */
async function nextWithin(conn: FramedConnection, ms: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const none = new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), ms); });
  const got = conn.next().then((f) => f.msg.body);
  try {
    return await Promise.race([got, none]);
  } finally {
    clearTimeout(timer);
  }
}

t.test('a peer with the capability is told to pause and resume; what it already sent is taken', async (t) => {
  const { receiver, cache, connect } = await setup(t);
  const conn = await connect(['lz4', 'backpressure']);
  t.equal(await openVolume(conn), 0);
  receiver.setFlow(PAUSED);
  t.match((await signalled(conn)).msg.backpressure, { volumeId: 'v1', paused: true, reason: 'cache 5.0% free' }, 'Backpressure(paused) for the volume filling the cache, with the reason');
  const blocks = await sendDiff(conn, 1, 3); // in flight when the pause was sent
  t.match((await conn.expect('ack')).msg.ack, { volumeId: 'v1', durableSeq: 1 }, 'a differential begun anyway is still taken and acknowledged');
  const stored = await readHrl(path.join(cache.stores.get('v1')!.dir, '0000000000000001.hrl'));
  t.ok(stored.extents.every((e, i) => e.data.equals(blocks[i]!)), 'and stored exactly');

  const late = await connect(['backpressure']);
  t.equal((await signalled(late)).msg.backpressure.paused, true, 'a peer connecting while paused is told at once');
  receiver.setFlow(OPEN);
  t.equal((await signalled(conn)).msg.backpressure.paused, false, 'resume is signalled');
});

t.test('an older peer (no capability) gets no Backpressure: its differential waits until there is room', async (t) => {
  const { receiver, cache, connect } = await setup(t);
  receiver.setFlow(PAUSED);
  const conn = await connect(['lz4', 'cumulative-ack', 'unknown']);
  t.equal(await openVolume(conn), 0, 'the volume opens as usual');
  const blocks = await sendDiff(conn, 1, 4);
  t.equal(await nextWithin(conn, 1500), null, 'nothing comes back while paused: no Backpressure frame, no ack');
  t.equal(cache.storedSeq('v1'), 0, 'and nothing was stored');
  receiver.setFlow(OPEN);
  t.match((await conn.expect('ack')).msg.ack, { volumeId: 'v1', durableSeq: 1 }, 'once there is room it is taken and acknowledged');
  const stored = await readHrl(path.join(cache.stores.get('v1')!.dir, '0000000000000001.hrl'));
  t.ok(stored.extents.every((e, i) => e.data.equals(blocks[i]!)), 'stored exactly');
  t.equal(receiver.stats.diffsDelayed, 1, 'counted as delayed');
});

t.test('full: no differential is taken from anyone, capability or not', async (t) => {
  const { receiver, cache, connect } = await setup(t);
  const conn = await connect(['backpressure']);
  await openVolume(conn);
  receiver.setFlow({ ...PAUSED, full: true });
  await signalled(conn);
  await sendDiff(conn, 1, 2);
  t.equal(await nextWithin(conn, 1500), null, 'no ack while full');
  t.equal(cache.storedSeq('v1'), 0, 'nothing stored');
  receiver.setFlow({ ...PAUSED, full: false });
  t.match((await conn.expect('ack')).msg.ack, { durableSeq: 1 }, 'taken once below the quota again (still paused for new ones)');
});
