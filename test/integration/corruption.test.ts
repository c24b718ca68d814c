// Damage in transit and on disk is detected by checksum, reported with its code, and recovered;
// nothing corrupt is ever stored or applied.
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { Lab } from '../../lab/lab.js';
import { crc } from '../../common/checksum.js';
import { DEFAULTS } from '../../common/defaults.js';
import { FramedConnection } from '../../proto/connection.js';
import { rawData } from '../../proto/extent-codec.js';
import { HrlWriter, listDiffs, readHrl } from '../../proto/hrl.js';
import { DiffReceiver } from '../../proto/receiver.js';
import { DiffSender, type OutboundVolume } from '../../proto/sender.js';
import { Cache, UNLINKED } from '../../process-server/cache.js';
import type { PsConfig } from '../../process-server/config.js';
import { makeImage, scratchDir, sha256, sleep, startWriter } from './helpers.js';
import { Rng } from '../seed.js';

const rng = new Rng('corruption');

/** A TCP proxy that flips one random byte in each of the first `bad` connections' client->server streams. */
async function corruptingProxy(target: number, bad: number): Promise<{ port: number; corrupted: () => number; close(): void }> {
  let conns = 0;
  let corrupted = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    let at = ++conns <= bad ? rng.int(200, 300_000) : -1;
    const flip = new Transform({
      transform(chunk: Buffer, _enc, done) {
        if (at >= 0 && at < chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[at] = chunk[at]! ^ 0x5a;
          corrupted++;
          at = -1;
        } else if (at >= 0) at -= chunk.length;
        done(null, chunk);
      },
    });
    client.pipe(flip).pipe(upstream).pipe(client);
    const end = (): void => { client.destroy(); upstream.destroy(); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, corrupted: () => corrupted, close: () => server.close() };
}

t.test('corrupted frames are detected by checksum and recovered by retransmission', async (t) => {
  const dir = await scratchDir(t, 'frames');
  const src = path.join(dir, 'src');
  await fsp.mkdir(src);
  // Ten differentials of random extents, as an agent journal would hold them.
  const originals = new Map<number, Buffer[]>();
  for (let seq = 1; seq <= 10; seq++) {
    const w = await HrlWriter.create(src, { volumeId: 'vol1', seq, startTimeMs: 1, endTimeMs: 2, volumeSize: 64 << 20, blockSize: 4096, consistency: 'FUZZY', flags: 0, tags: [] });
    const datas: Buffer[] = [];
    for (let i = 0; i < 8; i++) {
      const data = i % 2 ? rng.bytes(64 << 10) : Buffer.alloc(64 << 10, `seq ${seq} extent ${i} `);
      datas.push(data);
      await w.append({ offset: (seq * 8 + i) * (64 << 10), length: data.length, crc32c: crc(data), compression: 'NONE', storedLength: data.length }, data);
    }
    await w.commit();
    originals.set(seq, datas);
  }

  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  const cacheDir = path.join(dir, 'cache');
  const cfg = { name: 'ps', compression: 'lz4', cache: { ...DEFAULTS.processServer.cache }, volumes: [{ id: 'vol1', agent: 'agent-1', masterTarget: 'mt' }], masterTargets: [{ name: 'mt', host: '127.0.0.1', port: 1 }] } as unknown as PsConfig;
  const cache: Cache = new Cache(cfg, cacheDir, log, { ...UNLINKED, ack: (v, s) => receiver.ack(v, s) });
  t.teardown(() => cache.close());
  const receiver = new DiffReceiver(cache, 'ps', log);
  await cache.open();
  const server = net.createServer((s) => void receiver.serve(new FramedConnection(s, 'agent-1'), { name: 'agent-1', role: 'agent' }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const proxy = await corruptingProxy((server.address() as net.AddressInfo).port, 3);
  t.teardown(() => { proxy.close(); server.close(); });

  let acked = 0;
  let pending = [...originals.keys()];
  const vol: OutboundVolume = {
    volumeId: 'vol1',
    describe: () => ({ sizeBytes: 64 << 20, blockSize: 4096, replicationId: 'r1' }),
    pending: async () => pending,
    load: (seq) => readHrl(path.join(src, `${String(seq).padStart(16, '0')}.hrl`)),
    acked: async (seq) => { acked = seq; pending = pending.filter((s) => s > seq); },
  };
  const sender = new DiffSender({
    nodeName: 'agent-1', role: 'agent', log, volumes: () => [vol],
    connect: async () => {
      const socket = net.connect(proxy.port, '127.0.0.1');
      await new Promise((r, j) => socket.once('connect', r).once('error', j));
      return { socket, peerName: 'ps' };
    },
  });
  sender.start();
  const deadline = Date.now() + 60_000;
  while (acked < 10 && Date.now() < deadline) await sleep(100);
  await sender.close();

  t.equal(acked, 10, 'every differential was acknowledged in the end');
  t.equal(proxy.corrupted(), 3, 'three connections were corrupted in transit');
  t.ok(logs.some((l) => l.code === 'TM_ERR_FRAME_CHECKSUM'), 'the receiver reported TM_ERR_FRAME_CHECKSUM', { codes: logs.map((l) => `${String(l.code)} ${String(l.msg)} ${String(l.err)}`).filter((c) => !c.startsWith('undefined')) });
  t.same(await listDiffs(path.join(cacheDir, 'vol1')), [...originals.keys()], 'each differential is cached once, in order');
  for (const [seq, datas] of originals) {
    const d = await readHrl(path.join(cacheDir, 'vol1', `${String(seq).padStart(16, '0')}.hrl`));
    const same = d.extents.every((e, i) => rawData(e, e.data, 'vol1', seq).equals(datas[i]!));
    t.ok(same, `seq ${seq}: cached bytes equal what was sent`);
  }
});

t.test('damaged or truncated agent journal files are re-read from the volume', async (t) => {
  const dir = await scratchDir(t, 'journal');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 48, 24);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300, maxDiffBytes: 2 << 20 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 120_000);
  // The process server goes away: the agent journals what is written meanwhile, and keeps it.
  await lab.stop('ps');
  const writer = startWriter(source, 48 << 20, 5);
  const journal = path.join(lab.stateDirs.agent, 'volumes', 'vol1', 'journal');
  const deadline = Date.now() + 60_000;
  while ((await listDiffs(journal).catch(() => [])).length < 8 && Date.now() < deadline) await sleep(200);
  await writer.stop();
  await lab.stop('agent');
  const seqs = await listDiffs(journal);
  const file = (s: number): string => path.join(journal, `${String(s).padStart(16, '0')}.hrl`);
  t.ok(seqs.length >= 6, `the agent journaled ${seqs.length} differentials while the process server was away`);
  const damaged = file(seqs[2]!);
  const buf = await fsp.readFile(damaged);
  buf[buf.length - 5000]! ^= 0xff; // inside the last extent's data
  await fsp.writeFile(damaged, buf);
  await fsp.truncate(file(seqs[5]!), (await fsp.stat(file(seqs[5]!))).size - 100);

  const stoppedAt = Date.now();
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(stoppedAt, 120_000);
  const agentLog = await lab.logLines('agent');
  t.ok(agentLog.some((l) => l.code === 'TM_ERR_HRL_CORRUPT' && l.msg === 'damaged journal file; re-reading its blocks from the volume'), 'the damaged file was reported as TM_ERR_HRL_CORRUPT');
  t.ok(agentLog.some((l) => l.code === 'TM_ERR_HRL_TRUNCATED'), 'the truncated file was reported as TM_ERR_HRL_TRUNCATED');
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');
  const mtLog = await lab.logLines('mt');
  t.notOk(mtLog.some((l) => String(l.code ?? '').includes('CHECKSUM')), 'no corrupt data ever reached the master target');
});

t.test('a damaged process-server cache file does not stall the volume; the agent is told and resyncs by itself', async (t) => {
  const dir = await scratchDir(t, 'cache');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, 32, 16);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300, maxDiffBytes: 1 << 20 } });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 60_000);
  // The master target goes away: the process server caches what comes meanwhile (and acks it to the agent).
  await lab.stop('mt');
  const writer = startWriter(source, 32 << 20, 5);
  const cache = path.join(lab.stateDirs.ps, 'vol1');
  const deadline = Date.now() + 60_000;
  while ((await listDiffs(cache).catch(() => [])).length < 4 && Date.now() < deadline) await sleep(200);
  await writer.stop();
  await sleep(1000);
  await lab.stop('ps');
  const cached = await listDiffs(cache);
  const victim = path.join(cache, `${String(cached[1]!).padStart(16, '0')}.hrl`);
  const buf = await fsp.readFile(victim);
  buf[buf.length - 100]! ^= 0xff;
  await fsp.writeFile(victim, buf);

  // The agent stays away while the damage is found: it is told when it connects again.
  await lab.stop('agent');
  lab.start('ps');
  lab.start('mt');
  const a = async (): Promise<Record<string, unknown>> => ((await lab.status('agent'))?.volumes as Record<string, unknown>[])[0]!;
  const m = async (): Promise<Record<string, unknown> | undefined> => ((await lab.status('mt'))?.volumes as Record<string, unknown>[] | undefined)?.[0];
  const end = Date.now() + 60_000;
  while (Date.now() < end && (await m())?.appliedSeq !== cached.at(-1)) await sleep(200);
  t.equal((await m())?.appliedSeq, cached.at(-1), 'every later differential was still applied: no stall');
  t.ok((await lab.logLines('ps')).some((l) => l.code === 'TM_ERR_HRL_CORRUPT'), 'the process server reported the damaged file (TM_ERR_HRL_CORRUPT)');
  t.equal((await m())?.consistent, false, 'the master target flags the replica inconsistent');
  t.not(await sha256(replica), await sha256(source), 'the replica lacks the damaged differential\'s blocks');

  // No operator: the agent learns of it when it connects, resyncs, and the replica converges.
  const since = Date.now();
  lab.start('agent');
  await lab.waitConverged(since, 120_000);
  t.ok((await lab.logLines('agent')).some((l) => l.msg === 'receiver says the volume needs a resync'), 'the process server told the agent');
  t.match(String(((await a()).resync as Record<string, unknown>).reason), /damaged/, 'the resync ran for the damaged cache file');
  t.equal(await sha256(replica), await sha256(source), 'after the resync the replica equals the source');
  t.equal((await m())?.consistent, true, 'and is consistent again');
});
