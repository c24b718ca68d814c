// Corked frame writes: frames sent between cork() and uncork() reach the socket in few writes, arrive
// whole and in order, and the held bytes are bounded (CORK_BYTES) and handed over at uncork.
import t from 'tap';
import { Duplex } from 'node:stream';
import { CORK_BYTES, FramedConnection } from '../../../proto/connection.js';
import { FrameDecoder } from '../../../proto/frame.js';

/** A socket stand-in that records each write call (writev counts as one) and what it carried. */
class CountingSocket extends Duplex {
  writes = 0;
  readonly chunks: Buffer[] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.writes++;
    this.chunks.push(chunk);
    setImmediate(cb);
  }
  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    this.writes++;
    for (const c of chunks) this.chunks.push(c.chunk);
    setImmediate(cb);
  }
}

function extentFrames(n: number, size: number): { payload: Buffer }[] {
  return Array.from({ length: n }, (_, i) => ({ payload: Buffer.alloc(size, i & 0xff) }));
}

async function sendAll(conn: FramedConnection, frames: { payload: Buffer }[]): Promise<void> {
  for (const [i, f] of frames.entries()) {
    await conn.send({ extent: { offset: i * 4096, length: f.payload.length, crc32c: 0, compression: 'NONE', storedLength: f.payload.length } }, f.payload);
  }
}

function decoded(sock: CountingSocket): { offset: number; bytes: Buffer }[] {
  const d = new FrameDecoder();
  return d.push(Buffer.concat(sock.chunks)).map((f) => ({ offset: (f.msg as { extent: { offset: number } }).extent.offset, bytes: Buffer.from(f.payload) }));
}

t.test('corked: 512 frames of 4 KiB go out in a handful of writes, every byte in order', async (t) => {
  const frames = extentFrames(512, 4096);
  const plain = new CountingSocket();
  await sendAll(new FramedConnection(plain), frames);
  const corkedSock = new CountingSocket();
  const conn = new FramedConnection(corkedSock);
  conn.cork();
  await sendAll(conn, frames);
  await conn.uncork();
  await new Promise((r) => setImmediate(r));
  const bound = Math.ceil((512 * (4096 + 64)) / CORK_BYTES) + 2;
  t.ok(corkedSock.writes <= bound, `corked: ${corkedSock.writes} writes, at most ${bound}`);
  t.ok(corkedSock.writes * 10 < plain.writes, `uncorked took ${plain.writes} writes, more than ten times as many`);
  const got = decoded(corkedSock);
  t.equal(got.length, 512);
  t.ok(got.every((g, i) => g.offset === i * 4096 && g.bytes.equals(frames[i]!.payload)), 'frames whole and in order');
});

t.test('corked: frames are held until CORK_BYTES, then handed over; uncork hands over the rest', async (t) => {
  const sock = new CountingSocket();
  const conn = new FramedConnection(sock);
  conn.cork();
  await sendAll(conn, extentFrames(3, 1024));
  await new Promise((r) => setImmediate(r));
  t.equal(sock.writes, 0, 'small frames held while corked');
  await sendAll(conn, extentFrames(1, CORK_BYTES));
  await new Promise((r) => setImmediate(r));
  t.ok(sock.writes >= 1, 'handed over once CORK_BYTES are held');
  const before = sock.chunks.length;
  await sendAll(conn, extentFrames(2, 100));
  await new Promise((r) => setImmediate(r));
  t.equal(sock.chunks.length, before, 'held again after the hand-over');
  await conn.uncork();
  await new Promise((r) => setImmediate(r));
  t.equal(decoded(sock).length, 6, 'every frame out after uncork');
});

/** Like CountingSocket, but each write completes only after a few milliseconds (TLS-like, in flight). */
class SlowSocket extends CountingSocket {
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.writes++;
    this.chunks.push(chunk);
    setTimeout(cb, 5);
  }
  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    this.writes++;
    for (const c of chunks) this.chunks.push(c.chunk);
    setTimeout(cb, 5);
  }
}

t.test('a flush while an earlier write is still in flight does not stall (the process server forwarder hung so)', async (t) => {
  const sock = new SlowSocket();
  const conn = new FramedConnection(sock);
  conn.cork();
  const run = (async () => {
    for (let i = 0; i < 20; i++) {
      await sendAll(conn, extentFrames(1, 1024));
      await conn.flush(); // a small flush (before a throttle wait): its write is still in flight...
      await sendAll(conn, extentFrames(1, CORK_BYTES)); // ...when the next flush comes
    }
    await conn.uncork();
    return 'done';
  })();
  const outcome = await Promise.race([run, new Promise((r) => setTimeout(() => r('stalled'), 10_000).unref())]);
  t.equal(outcome, 'done');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(decoded(sock).length, 40, 'every frame arrived');
});
