// A TCP proxy between two hops, in this process: it re-chunks the byte stream at random boundaries
// (always), and on command delays it, drops every connection, or partitions the hop (new connections
// are cut at once) for a while. TLS runs end to end through it, so the daemons see a bad network only.
import net from 'node:net';
import type { Rng } from './rng.js';

export class ChaosProxy {
  private server: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  private delayMs = 0;
  private partitioned = false;
  port = 0;

  constructor(readonly name: string, private readonly target: number, private readonly rng: Rng) {}

  async listen(): Promise<number> {
    this.server = net.createServer((c) => this.accept(c));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  private accept(client: net.Socket): void {
    if (this.partitioned) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.conns.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.conns.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    this.pipe(client, upstream);
    this.pipe(upstream, client);
  }

  /** Forward in random pieces (1 byte to the whole chunk), each after the current delay, in order. */
  private pipe(from: net.Socket, to: net.Socket): void {
    let chain = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      const pieces: Buffer[] = [];
      for (let p = 0; p < chunk.length; ) {
        const n = this.rng.next() < 0.3 ? this.rng.int(1, Math.min(chunk.length - p, 64) + 1) : chunk.length - p;
        pieces.push(chunk.subarray(p, p + n));
        p += n;
      }
      const delay = this.delayMs;
      if (delay > 0) from.pause();
      chain = chain.then(async () => {
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));
        for (const piece of pieces) if (!to.destroyed) to.write(piece);
        from.resume();
      });
    });
    from.on('end', () => void chain.then(() => to.end()));
  }

  delay(ms: number): void {
    this.delayMs = ms;
  }

  /** Cut every connection now (a NAT timeout, a cable pulled and put back). */
  drop(): number {
    const n = this.conns.size / 2;
    for (const s of this.conns) s.destroy();
    return n;
  }

  partition(on: boolean): void {
    this.partitioned = on;
    if (on) this.drop();
  }

  heal(): void {
    this.delayMs = 0;
    this.partitioned = false;
  }

  async close(): Promise<void> {
    this.drop();
    await new Promise((r) => this.server?.close(r) ?? r(undefined));
  }
}
