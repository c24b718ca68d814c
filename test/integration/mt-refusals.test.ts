// The master target's own refusals, by code, to a real process-server certificate over TLS: a volume it
// does not serve, a newer protocol only, another geometry than the replica it holds, a replication started
// again from scratch onto that replica, a differential out of sequence. Each changes nothing on disk, the
// connection's other work goes on where the protocol allows, and the replica still converges afterwards.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { TidemarkError } from '../../common/errors.js';
import { silentLogger } from '../../common/log.js';
import { PeerTrust, trustPaths } from '../../common/peer-trust.js';
import { connectTls } from '../../common/tls.js';
import { FramedConnection } from '../../proto/connection.js';
import { PROTOCOL_VERSION } from '../../proto/messages.js';
import { makeImage, scratchDir, sha256 } from './helpers.js';

const SIZE = 16 << 20;

const hello = (min = 1, max = PROTOCOL_VERSION) => ({ hello: { protocolVersion: max, minProtocolVersion: min, capabilities: [], nodeName: 'ps-1', role: 'process-server', software: 'test' } });

async function refusal(conn: FramedConnection): Promise<TidemarkError | null> {
  return conn.next().then(() => null, (e: unknown) => (e instanceof TidemarkError ? e : null));
}

/** Every file under the master target's state folder with its size and time: "nothing changed". */
async function stateOf(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || /\.(lock|sock)$|status-port|\.log$/.test(e.name)) continue;
    const st = await fsp.stat(path.join(e.parentPath, e.name));
    out.push(`${path.relative(dir, path.join(e.parentPath, e.name))} ${st.size} ${st.mtimeMs}`);
  }
  return out.sort();
}

t.test('the master target refuses by code and changes nothing; the real pipeline goes on', async (t) => {
  const dir = await scratchDir(t, 'mt-refusals');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE >> 20, 8);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  const cfg = JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as { tls: { ca: string; cert: string; key: string }; masterTargets: Array<{ port: number }> };
  const trust = await PeerTrust.open(trustPaths(cfg.tls, (x) => path.resolve(dir, x)), silentLogger());
  t.teardown(() => trust.close());
  const connect = async (): Promise<FramedConnection> => {
    for (let i = 0; ; i++) {
      try {
        const { socket } = await connectTls('127.0.0.1', cfg.masterTargets[0]!.port, trust, { role: 'master-target', name: 'mt-1' });
        const c = new FramedConnection(socket, 'mt-1');
        t.teardown(() => c.destroy());
        return c;
      } catch (e) {
        if (i > 100) throw e;
        await new Promise((r) => setTimeout(r, 100)); // the master target is still starting
      }
    }
  };
  const opened = async (ov: Record<string, unknown>): Promise<FramedConnection> => {
    const c = await connect();
    await c.send(hello());
    await c.expect('welcome');
    await c.send({ openVolume: { volumeId: 'vol1', sizeBytes: SIZE, blockSize: 4096, replicationId: 'r1', ...ov } });
    return c;
  };

  const older = await connect();
  await older.send(hello(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3));
  t.equal((await refusal(older))?.context.peerCode, 'TM_ERR_PROTOCOL_VERSION', 'a newer protocol only: TM_ERR_PROTOCOL_VERSION');

  const unknown = await opened({ volumeId: 'vol9' });
  const e1 = await refusal(unknown);
  t.equal(e1?.context.peerCode, 'TM_ERR_VOLUME_NOT_ASSIGNED', 'a volume it does not serve');
  t.equal(e1?.context.volume, 'vol9');

  // The real pipeline replicates first; then, with the process server stopped, the refusals.
  let since = Date.now();
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(since, 120_000);
  await lab.stop('ps');
  const agentState = JSON.parse(await fsp.readFile(path.join(dir, 'agent-state', 'volumes', 'vol1', 'state.json'), 'utf8')) as { replicationId: string };
  const stateDir = path.join(dir, 'mt-state');
  const before = await stateOf(stateDir);
  const replicaBefore = await sha256(replica);
  const rid = agentState.replicationId;

  const bigger = await opened({ replicationId: rid, sizeBytes: SIZE * 2 });
  t.equal((await refusal(bigger))?.context.peerCode, 'TM_ERR_VOLUME_GEOMETRY', 'another size than the replica: TM_ERR_VOLUME_GEOMETRY');
  const again = await opened({ replicationId: 'r2' });
  t.equal((await refusal(again))?.context.peerCode, 'TM_ERR_REPLICATION_MISMATCH', 'a replication started again from scratch: TM_ERR_REPLICATION_MISMATCH');

  const gap = await opened({ replicationId: rid });
  const durable = (await gap.expect('volumeState')).msg.volumeState.durableSeq;
  t.ok(durable > 0, `the master target holds ${durable} differentials`);
  await gap.send({ diffBegin: { volumeId: 'vol1', seq: durable + 5, startTimeMs: 1, endTimeMs: 1, consistency: 'CRASH', tags: [], extentCount: 0, flags: 0 } });
  const e5 = await refusal(gap);
  t.equal(e5?.context.peerCode, 'TM_ERR_SEQUENCE_GAP', 'a differential out of sequence: TM_ERR_SEQUENCE_GAP');
  t.equal(e5?.context.seq, durable + 5);
  gap.destroy();

  t.strictSame(await stateOf(stateDir), before, 'the master target\'s state is unchanged by all of these');
  t.equal(await sha256(replica), replicaBefore, 'and so is the replica');

  // The volume goes on from there: new writes reach the replica through the real process server.
  const fh = await fsp.open(source, 'r+');
  await fh.write(Buffer.alloc(1 << 20, 0x5a), 0, 1 << 20, 3 << 20);
  await fh.close();
  since = Date.now();
  lab.start('ps');
  await lab.waitConverged(since, 120_000);
  t.equal(await sha256(replica), await sha256(source), 'the real pipeline goes on and converges, byte for byte');
});
