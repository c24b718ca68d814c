// Recovery writes an image's chunks as a ranged GET delivers them: pieces of any size, split anywhere
// (inside a chunk header, inside the data), checked and written in the same pass. Built from a real image
// file (buildImage) and compared with the volume byte for byte; damage anywhere in a chunk is refused.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { buildImage, CHUNK_HEADER, IMAGE_TRAILER, INDEX_ENTRY, parseIndex, type ChunkRef } from '../../../../master-target/bucket/image.js';
import { writeChunkStream } from '../../../../master-target/bucket/recover.js';
import { Rng } from '../../../seed.js';

const BS = 4096;

/** Runs of `run` equal random non-zero bytes. */
function filled(size: number, run: number, rng: Rng): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += run) b.fill(rng.int(1, 256), at, at + run);
  return b;
}

async function* pieces(buf: Buffer, rng: Rng): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < buf.length;) {
    const n = Math.min(buf.length - at, rng.int(1, 3) === 1 ? rng.int(1, 40) : rng.int(1, 200_000));
    yield buf.subarray(at, at + n);
    at += n;
  }
}

t.test('chunks written from pieces split anywhere equal the volume; skipped blocks are left alone', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-image-stream-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const rng = new Rng('image-stream');
  const size = 10 << 20; // two full 4 MiB chunks, one of 2 MiB
  const vol = filled(size, 256, rng);
  const volPath = path.join(dir, 'vol.img');
  await fsp.writeFile(volPath, vol);
  const file = path.join(dir, 'image.tmbi');
  const built = await buildImage(volPath, file, { volumeId: 'v', id: 1, kind: 'full', seq: 1, parentId: null, sizeBytes: size, blockSize: BS, createdAt: 0 }, null);
  const obj = await fsp.readFile(file);
  const refs = parseIndex(obj.subarray(built.indexOffset, built.indexOffset + built.chunks * INDEX_ENTRY + IMAGE_TRAILER), built, 'k');
  t.equal(refs.length, 3);
  const chunkBytes = obj.subarray(refs[0]!.objectOffset, built.indexOffset);

  for (let round = 0; round < 4; round++) {
    const out = path.join(dir, `out-${round}.img`);
    await fsp.writeFile(out, Buffer.alloc(size, 0xee));
    // Round 0 writes everything; the others mark random blocks as held by a newer image.
    const withSkips: Array<ChunkRef & { skip: Uint8Array }> = refs.map((r) => ({ ...r, skip: Uint8Array.from({ length: Math.ceil(r.length / BS) }, () => (round > 0 && rng.int(0, 3) === 0 ? 1 : 0)) }));
    const fh = await fsp.open(out, 'r+');
    let counted = 0;
    await writeChunkStream(pieces(chunkBytes, rng), withSkips, BS, fh, 'k', (n) => { counted += n; });
    await fh.close();
    t.equal(counted, chunkBytes.length, `round ${round}: every byte counted`);
    const got = await fsp.readFile(out);
    let bad = 0;
    for (const r of withSkips) {
      for (let b = 0; b < r.skip.length; b++) {
        const o = r.volumeOffset + b * BS;
        const want = r.skip[b] ? Buffer.alloc(BS, 0xee) : vol.subarray(o, o + BS);
        if (!got.subarray(o, o + BS).equals(want)) bad++;
      }
    }
    t.equal(bad, 0, `round ${round}: written blocks equal the volume, skipped ones untouched`);
  }
});

t.test('damage in a chunk header or its data, or a short or long body: TM_ERR_BUCKET_CORRUPT', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-image-stream-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const rng = new Rng('image-stream-damage');
  const size = 6 << 20;
  const volPath = path.join(dir, 'vol.img');
  await fsp.writeFile(volPath, filled(size, 512, rng));
  const file = path.join(dir, 'image.tmbi');
  const built = await buildImage(volPath, file, { volumeId: 'v', id: 1, kind: 'full', seq: 1, parentId: null, sizeBytes: size, blockSize: BS, createdAt: 0 }, null);
  const obj = await fsp.readFile(file);
  const refs = parseIndex(obj.subarray(built.indexOffset, built.indexOffset + built.chunks * INDEX_ENTRY + IMAGE_TRAILER), built, 'k');
  const chunkBytes = obj.subarray(refs[0]!.objectOffset, built.indexOffset);
  const out = path.join(dir, 'out.img');
  await fsp.writeFile(out, Buffer.alloc(size));
  const attempt = async (body: Buffer): Promise<void> => {
    const fh = await fsp.open(out, 'r+');
    try {
      await writeChunkStream(pieces(body, rng), refs.map((r) => ({ ...r, skip: new Uint8Array(Math.ceil(r.length / BS)) })), BS, fh, 'k');
    } finally {
      await fh.close();
    }
  };
  await attempt(chunkBytes);
  t.ok((await fsp.readFile(out)).equals(await fsp.readFile(volPath)), 'undamaged: exact');
  const second = refs[1]!.objectOffset - refs[0]!.objectOffset;
  for (const at of [3, 17, CHUNK_HEADER + 5, second + 9, second + CHUNK_HEADER + (1 << 20), chunkBytes.length - 1]) {
    const bad = Buffer.from(chunkBytes);
    bad[at]! ^= 0x40;
    await t.rejects(attempt(bad), { code: 'TM_ERR_BUCKET_CORRUPT' }, `a bit flipped at ${at}`);
  }
  await t.rejects(attempt(chunkBytes.subarray(0, chunkBytes.length - 1)), { code: 'TM_ERR_BUCKET_CORRUPT' }, 'one byte short');
  await t.rejects(attempt(Buffer.concat([chunkBytes, Buffer.alloc(1)])), { code: 'TM_ERR_BUCKET_CORRUPT' }, 'one byte too many');
});
