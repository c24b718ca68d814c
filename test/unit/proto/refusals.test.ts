// What a receiver refuses, matched by code on a real socket with the process server's real cache as the
// sink: a peer speaking only a newer protocol (TM_ERR_PROTOCOL_VERSION), a volume offered from another
// source state than the one replicated (TM_ERR_REPLICATION_MISMATCH). The sender side sees each as a
// TM_ERR_PEER_ERROR carrying the receiver's code, and nothing was stored.
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import t, { type Test } from 'tap';
import { TidemarkError } from '../../../common/errors.js';
import { FramedConnection } from '../../../proto/connection.js';
import { PROTOCOL_VERSION } from '../../../proto/messages.js';
import { psLoopback } from './ps-loopback.js';

async function setup(t: Test): Promise<{ dir: string; connect: () => Promise<FramedConnection> }> {
  const { dir, connect } = await psLoopback(t, 'refuse');
  return { dir, connect };
}

/** The TidemarkError the next frame raises, or null if a frame arrives. */
async function refusal(conn: FramedConnection): Promise<TidemarkError | null> {
  return conn.next().then(() => null, (e: unknown) => (e instanceof TidemarkError ? e : null));
}

const hello = (min: number, max: number) => ({ hello: { protocolVersion: max, minProtocolVersion: min, capabilities: [], nodeName: 'agent-1', role: 'agent', software: 'test' } });

t.test('a peer that speaks only a newer protocol is refused with TM_ERR_PROTOCOL_VERSION', async (t) => {
  const { connect } = await setup(t);
  const conn = await connect();
  await conn.send(hello(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 2));
  const err = await refusal(conn);
  t.equal(err?.code, 'TM_ERR_PEER_ERROR', 'the sender sees a peer error');
  t.equal(err?.context.peerCode, 'TM_ERR_PROTOCOL_VERSION', 'carrying the receiver\'s code');
  t.match(err?.message, new RegExp(`speaks protocol ${PROTOCOL_VERSION + 1}..${PROTOCOL_VERSION + 2}`), 'naming both sides\' versions');
  // The same receiver still serves a peer that speaks its version (a newer peer that can step down too).
  const ok = await connect();
  await ok.send(hello(1, PROTOCOL_VERSION + 1));
  t.equal((await ok.expect('welcome')).msg.welcome.protocolVersion, PROTOCOL_VERSION, 'a peer with a common version is welcomed at ours');
});

t.test('a volume offered from another source state is refused with TM_ERR_REPLICATION_MISMATCH', async (t) => {
  const { dir, connect } = await setup(t);
  const first = await connect();
  await first.send(hello(1, PROTOCOL_VERSION));
  await first.expect('welcome');
  await first.send({ openVolume: { volumeId: 'v1', sizeBytes: 1 << 20, blockSize: 4096, replicationId: 'r1' } });
  t.equal((await first.expect('volumeState')).msg.volumeState.durableSeq, 0, 'replication r1 adopted');
  first.destroy();
  const stateFiles = async (): Promise<Record<string, string>> => {
    const out: Record<string, string> = {};
    for (const e of await fsp.readdir(dir, { recursive: true, withFileTypes: true })) if (e.isFile()) out[path.join(e.parentPath, e.name)] = await fsp.readFile(path.join(e.parentPath, e.name), 'utf8');
    return out;
  };
  const before = await stateFiles();

  const again = await connect();
  await again.send(hello(1, PROTOCOL_VERSION));
  await again.expect('welcome');
  await again.send({ openVolume: { volumeId: 'v1', sizeBytes: 1 << 20, blockSize: 4096, replicationId: 'r2' } });
  const err = await refusal(again);
  t.equal(err?.code, 'TM_ERR_PEER_ERROR');
  t.equal(err?.context.peerCode, 'TM_ERR_REPLICATION_MISMATCH', 'the volume is refused as replicated from another source state');
  t.equal(err?.context.volume, 'v1', 'naming the volume');
  t.strictSame(await stateFiles(), before, 'and the receiver\'s state is unchanged');
});
