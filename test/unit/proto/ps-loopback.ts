// Shared by the receiver tests: the process server's real cache behind a DiffReceiver on a loopback
// socket (plain TCP, peer "agent-1"), and a way to open client connections to it, all torn down with `t`.
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import type { Test } from 'tap';
import { silentLogger } from '../../../common/log.js';
import { Cache, UNLINKED, type CacheLinks } from '../../../process-server/cache.js';
import { psConfigSchema } from '../../../process-server/config.js';
import { FramedConnection } from '../../../proto/connection.js';
import { DiffReceiver, type InboundSink } from '../../../proto/receiver.js';

export interface PsLoopback {
  dir: string;
  cache: Cache;
  receiver: DiffReceiver;
  /** A new connection to the receiver, as the agent's sender would open it (no hello sent yet). */
  connect(): Promise<FramedConnection>;
}

/**
 * `sink`: what the receiver stores into, made from the cache (default: the cache itself). `links`: the
 * cache's links to replace (its master target's side, say); acks always go to the receiver.
 */
export async function psLoopback(t: Test, prefix: string, sink: (cache: Cache) => InboundSink = (c) => c, links: Partial<CacheLinks> = {}): Promise<PsLoopback> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `tm-${prefix}-`));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const cfg = { ...psConfigSchema.parse({ name: 'ps', cacheDir: dir, tls: { ca: '', cert: '', key: '' }, masterTargets: [{ name: 'mt', port: 1 }], volumes: [{ id: 'v1', agent: 'agent-1', masterTarget: 'mt' }, { id: 'v2', agent: 'agent-1', masterTarget: 'mt' }] }), configDir: dir };
  const cache: Cache = new Cache(cfg, dir, silentLogger(), { ...UNLINKED, ...links, ack: (v, s) => receiver.ack(v, s) });
  const receiver = new DiffReceiver(sink(cache), 'ps', silentLogger());
  await cache.open();
  t.teardown(() => cache.close());
  const server = net.createServer((socket) => void receiver.serve(new FramedConnection(socket, 'agent-1'), { name: 'agent-1', role: 'agent' }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as net.AddressInfo;
  const conns: FramedConnection[] = [];
  t.teardown(() => conns.forEach((c) => c.destroy()));
  const connect = async (): Promise<FramedConnection> => {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    const conn = new FramedConnection(socket, 'ps');
    conns.push(conn);
    return conn;
  };
  return { dir, cache, receiver, connect };
}
