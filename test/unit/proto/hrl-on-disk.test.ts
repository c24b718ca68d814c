// A differential larger than IN_MEMORY_BYTES is spooled to its file as it is received and read back
// extent by extent, never held whole (issue 12 item 4: a 192 MiB differential).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { crc } from '../../../common/checksum.js';
import { codeOf } from '../../../common/errors.js';
import { extentsOf, HrlWriter, IN_MEMORY_BYTES, KEEP_BYTES, loadHrl, openHrlOnDisk } from '../../../proto/hrl.js';

const MiB = 1 << 20;

t.test('a 192 MiB differential is not kept by its writer and is read back extent by extent, bytes equal', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-hrl-disk-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const header = { volumeId: 'vol1', seq: 7, startTimeMs: 1, endTimeMs: 2, volumeSize: 256 * MiB, blockSize: 4096, consistency: 'CRASH' as const, flags: 0, tags: [] };
  const w = await HrlWriter.create(dir, header, { keep: true });
  // Each extent's data is derived from its index, so the test holds only checksums, not 192 MiB.
  const block = randomBytes(MiB);
  const dataOf = (i: number): Buffer => { const b = Buffer.from(block); b.writeUInt32LE(i, 0); return b; };
  const sums: number[] = [];
  for (let i = 0; i < 192; i++) {
    const d = dataOf(i);
    sums.push(crc(d));
    await w.append({ offset: i * MiB, length: MiB, crc32c: crc(d), compression: 'NONE', storedLength: MiB }, d);
  }
  const digest = await w.commit();
  t.ok(192 * MiB > KEEP_BYTES, 'larger than the writer keeps');
  t.equal(w.diff(), null, 'the writer kept nothing: the receiver spools it to the file');

  const stored = await loadHrl(w.finalPath);
  t.ok('file' in stored, `a file over ${IN_MEMORY_BYTES} bytes loads as a differential on disk`);
  t.equal(stored.extents.length, 192, 'with every extent listed');
  t.equal(stored.extentDigest, digest, 'and the digest the writer made');
  t.notOk(stored.extents.some((e) => 'data' in e), 'and no extent data held');
  let i = 0;
  let equal = 0;
  for await (const e of extentsOf(stored)) {
    if (e.offset === i * MiB && crc(e.data) === sums[i] && e.data.equals(dataOf(i))) equal++;
    i++;
  }
  t.equal(equal, 192, 'every extent reads back with its bytes');

  // One flipped byte in the middle of the file: the streamed file checksum catches it.
  const fh = await fsp.open(w.finalPath, 'r+');
  await fh.write(Buffer.from([0x5a]), 0, 1, 100 * MiB);
  await fh.close();
  const err = await openHrlOnDisk(w.finalPath).then(() => null, (e: unknown) => e);
  t.equal(codeOf(err), 'TM_ERR_HRL_CORRUPT', 'a damaged large file is refused (TM_ERR_HRL_CORRUPT)');
});
