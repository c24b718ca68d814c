// The soak's proxy re-chunks and delays without changing a byte, and drop/partition cut the hop.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { ChaosProxy } from '../../../bench/soak/proxy.js';
import { Rng } from '../../../bench/soak/rng.js';

/** An echo server; returns its port and a closer. */
async function echo(): Promise<{ port: number; close(): Promise<void> }> {
  const conns = new Set<net.Socket>();
  const s = net.createServer((c) => {
    conns.add(c);
    c.on('error', () => {});
    c.pipe(c);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as net.AddressInfo).port, close: () => new Promise((r) => { for (const c of conns) c.destroy(); s.close(() => r()); }) };
}

function roundTrip(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let n = 0;
    c.on('data', (b: Buffer) => {
      got.push(b);
      n += b.length;
      if (n >= data.length) {
        c.end();
        resolve(Buffer.concat(got));
      }
    });
    c.on('error', reject);
    c.on('close', () => n < data.length && reject(new Error(`closed after ${n} bytes`)));
    c.write(data);
  });
}

t.test('bytes cross the proxy unchanged while it re-chunks and delays', async (t) => {
  const e = await echo();
  const p = new ChaosProxy('test', e.port, new Rng(5));
  const port = await p.listen();
  t.teardown(async () => { await p.close(); await e.close(); });
  const data = randomBytes(1 << 20);
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  t.equal(sha(await roundTrip(port, data)), sha(data), '1 MiB echoed intact');
  p.delay(30);
  t.equal(sha(await roundTrip(port, data)), sha(data), 'and with 30 ms added per chunk');
});

t.test('drop cuts live connections; partition refuses new ones until healed', async (t) => {
  const e = await echo();
  const p = new ChaosProxy('test', e.port, new Rng(6));
  const port = await p.listen();
  t.teardown(async () => { await p.close(); await e.close(); });
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  await new Promise((r) => c.once('connect', r));
  c.write('x');
  await new Promise((r) => c.once('data', r));
  const closed = new Promise((r) => c.once('close', r));
  t.equal(p.drop(), 1, 'one connection cut');
  await closed;
  p.partition(true);
  await t.rejects(roundTrip(port, Buffer.from('hello')), 'refused while partitioned');
  p.heal();
  t.equal((await roundTrip(port, Buffer.from('hello'))).toString(), 'hello', 'back after heal');
});
