// What a peer sends is bounded before it is allocated, decompressed or written (issue 12 item 4): a
// decompression bomb, an oversized differential and extents outside the volume are refused with their
// codes by the real daemons, nothing is stored, and the volume goes on replicating afterwards.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Lab } from '../../lab/lab.js';
import { crc } from '../../common/checksum.js';
import type { Role } from '../../common/pki.js';
import { defaultCrlPath, PeerTrust } from '../../common/peer-trust.js';
import { pino } from 'pino';
import { connectTls } from '../../common/tls.js';
import { FramedConnection } from '../../proto/connection.js';
import { digestStep } from '../../proto/hrl.js';
import { CAPABILITIES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type ExtentMsg } from '../../proto/messages.js';
import { makeImage, scratchDir, sha256, until } from './helpers.js';

const SIZE = 16 << 20;

/** Peak and current resident memory of a process, in bytes (/proc/<pid>/status). */
async function memory(pid: number): Promise<{ hwm: number; rss: number }> {
  const text = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)![1]) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

async function hrlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { recursive: true })) if (String(e).endsWith('.hrl')) out.push(String(e));
  return out;
}


/** A lab replicating one 16 MiB volume, converged. */
async function replicating(t: Test, name: string, opts: { ps?: Record<string, unknown> } = {}): Promise<{ lab: Lab; dir: string; source: string; replica: string }> {
  const dir = await scratchDir(t, name);
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE >> 20, 4);
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 }, ps: opts.ps });
  t.teardown(() => lab.stopAll());
  lab.start('mt');
  lab.start('ps');
  lab.start('agent');
  await lab.waitConverged(Date.now(), 60_000);
  return { lab, dir, source, replica };
}

/**
 * A client holding one of the lab's certificates, speaking the protocol by hand: opens vol1 with the
 * receiver's own replication id (read from its state) and offers one differential.
 */
async function forge(lab: Lab, as: { cert: string; role: Role; port: number; state: string }): Promise<{ conn: FramedConnection; next: number }> {
  const p = (f: string): string => path.join(lab.opts.dir, 'pki', f);
  const trust = await PeerTrust.open({ ca: p('ca.crt'), cert: p(`${as.cert}.crt`), key: p(`${as.cert}.key`), crl: defaultCrlPath(p('ca.crt')) }, pino({ level: 'silent' }));
  const id = trust.identity;
  const { socket } = await connectTls('127.0.0.1', as.port, trust, { role: as.role, name: as.role === 'master-target' ? 'mt-1' : 'ps-1' });
  socket.once('close', () => trust.close());
  const conn = new FramedConnection(socket, 'receiver');
  await conn.send({ hello: { protocolVersion: PROTOCOL_VERSION, minProtocolVersion: MIN_PROTOCOL_VERSION, capabilities: [...CAPABILITIES], nodeName: as.cert, role: id.role, software: 'forged' } });
  await conn.expect('welcome');
  const st = JSON.parse(await fsp.readFile(as.state, 'utf8')) as { replicationId: string };
  await conn.send({ openVolume: { volumeId: 'vol1', sizeBytes: SIZE, blockSize: 4096, replicationId: st.replicationId } });
  const { msg } = await conn.expect('volumeState');
  return { conn, next: msg.volumeState.durableSeq + 1 };
}

/** Send a differential's begin and extents; resolves with the code the receiver refused it with. */
async function offer(conn: FramedConnection, seq: number, extents: Array<{ e: ExtentMsg; payload: Buffer }>, declared = extents.length): Promise<string> {
  // The receiver's refusal code, or "accepted" when it acknowledges the differential instead.
  let timer: NodeJS.Timeout | undefined;
  const refused = (async () => {
    try {
      // Without the checks the master target neither refuses nor acknowledges: it loops on apply errors.
      const silence = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('no answer in 20 s')), 20_000); });
      for (;;) if ((await Promise.race([conn.next(), silence])).msg.body === 'ack') return 'accepted';
    } catch (e) {
      return String((e as { context?: { peerCode?: string } }).context?.peerCode ?? (e as Error).message);
    } finally {
      clearTimeout(timer);
      conn.destroy();
    }
  })();
  try {
    await conn.send({ diffBegin: { volumeId: 'vol1', seq, startTimeMs: Date.now(), endTimeMs: Date.now(), consistency: 'CRASH', tags: [], extentCount: declared, flags: 0 } });
    for (const { e, payload } of extents) await conn.send({ extent: e }, payload);
    // The right digest: without the bounds checks this differential would be stored and applied.
    const extentDigest = extents.reduce((d, { e }) => digestStep(d, e), 0);
    await conn.send({ diffEnd: { volumeId: 'vol1', seq, extentCount: declared, extentDigest } });
  } catch {
    /* the receiver hung up: its report says why */
  }
  return refused;
}

function raw(offset: number, data: Buffer): { e: ExtentMsg; payload: Buffer } {
  return { e: { offset, length: data.length, crc32c: crc(data), compression: 'NONE', storedLength: data.length }, payload: data };
}

/** Change the source, then wait until the replica holds exactly it. */
async function stillReplicates(t: Test, lab: Lab, source: string, replica: string): Promise<void> {
  const fh = await fsp.open(source, 'r+');
  await fh.write(randomBytes(256 << 10), 0, 256 << 10, 8 << 20);
  await fh.close();
  await lab.waitConverged(Date.now(), 60_000);
  t.equal(await sha256(replica), await sha256(source), 'the volume replicates afterwards: replica equals source');
  t.equal((await fsp.stat(replica)).size, SIZE, 'the replica did not grow');
}

t.test('a 64-byte LZ4 extent declaring 1 GiB is refused before it is decompressed; memory stays bounded', async (t) => {
  const { lab, source, replica } = await replicating(t, 'bomb');
  await lab.stop('agent'); // the forged client stands in for it
  const ps = lab.procs.get('ps')!.pid!;
  const before = await memory(ps);
  const { conn, next } = await forge(lab, { cert: 'agent-1', role: 'process-server', port: Number((JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as { listen: { port: number } }).listen.port), state: path.join(lab.stateDirs.ps, 'vol1', 'state.json') });
  const bomb = Buffer.alloc(64);
  bomb.writeUInt32LE(1 << 30, 0); // lz4-napi's size prefix: what the decompressor allocates
  bomb.writeUInt8(0xf0, 4); // then a literal run, as a real block begins
  const code = await offer(conn, next, [{ e: { offset: 0, length: 1 << 30, crc32c: 0, compression: 'LZ4', storedLength: 64 }, payload: bomb }]);
  t.equal(code, 'TM_ERR_EXTENT_BOUNDS', 'the process server refused the extent with TM_ERR_EXTENT_BOUNDS');
  t.ok(await until(async () => (await lab.logLines('ps')).some((l) => l.code === 'TM_ERR_EXTENT_BOUNDS'), 5000), 'and logged the code');
  const after = await memory(ps);
  t.ok(after.hwm - before.hwm < 64 << 20, `peak resident memory of the process server grew ${((after.hwm - before.hwm) / 1048576).toFixed(1)} MiB (< 64 MiB)`);
  t.same(await hrlFiles(lab.stateDirs.ps), [], 'nothing was cached');
  lab.start('agent');
  await stillReplicates(t, lab, source, replica);
});

t.test('a differential over maxDiffBytes is refused by count or by bytes, and nothing is cached', async (t) => {
  const { lab, source, replica } = await replicating(t, 'oversize', { ps: { maxDiffBytes: 4 << 20 } });
  await lab.stop('agent');
  const psPort = Number((JSON.parse(await fsp.readFile(lab.configs.ps, 'utf8')) as { listen: { port: number } }).listen.port);
  const as = { cert: 'agent-1', role: 'process-server' as Role, port: psPort, state: path.join(lab.stateDirs.ps, 'vol1', 'state.json') };
  // More extents than 4 MiB of 4 KiB blocks can hold: refused at DiffBegin, before any extent.
  let f = await forge(lab, as);
  t.equal(await offer(f.conn, f.next, [], 1026 + 1), 'TM_ERR_DIFF_TOO_LARGE', 'an extent count beyond maxDiffBytes is refused (TM_ERR_DIFF_TOO_LARGE)');
  // Five 1 MiB extents: the fifth crosses 4 MiB.
  f = await forge(lab, as);
  const five = Array.from({ length: 5 }, (_, i) => raw(i << 20, randomBytes(1 << 20)));
  t.equal(await offer(f.conn, f.next, five), 'TM_ERR_DIFF_TOO_LARGE', '5 MiB of extents against a 4 MiB cap is refused (TM_ERR_DIFF_TOO_LARGE)');
  t.same(await hrlFiles(lab.stateDirs.ps), [], 'nothing was cached');
  lab.start('agent');
  await stillReplicates(t, lab, source, replica);
});

t.test('extents past the end or off block boundaries are refused by the master target; the replica is unchanged', async (t) => {
  const { lab, source, replica } = await replicating(t, 'range');
  await lab.stop('agent');
  await lab.stop('ps'); // the forged process server is the only one sending vol1
  const before = await sha256(replica);
  const mtPort = Number((JSON.parse(await fsp.readFile(lab.configs.mt, 'utf8')) as { listen: { port: number } }).listen.port);
  const as = { cert: 'ps-1', role: 'master-target' as Role, port: mtPort, state: path.join(lab.stateDirs.mt, 'volumes', 'vol1', 'state.json') };
  for (const [what, ext] of [
    ['past the end', raw(SIZE, randomBytes(4096))],
    ['straddling the end', raw(SIZE - 4096, randomBytes(8192))],
    ['off a block boundary', raw(100, randomBytes(4096))],
    ['far past the end', raw(2 ** 40, randomBytes(4096))],
  ] as const) {
    const f = await forge(lab, as);
    t.equal(await offer(f.conn, f.next, [raw(0, randomBytes(4096)), ext]), 'TM_ERR_EXTENT_BOUNDS', `an extent ${what} is refused (TM_ERR_EXTENT_BOUNDS)`);
  }
  t.equal((await fsp.stat(replica)).size, SIZE, 'the replica did not grow');
  t.equal(await sha256(replica), before, 'nor change');
  t.same(await hrlFiles(path.join(lab.stateDirs.mt, 'volumes')), [], 'nothing was staged');
  const mt = (await lab.status('mt'))!.volumes as Array<{ lastError: string | null }>;
  t.equal(mt[0]!.lastError, null, 'the applier saw no error (no apply error loop)');
  lab.start('ps');
  lab.start('agent');
  await stillReplicates(t, lab, source, replica);
});
