// The replica hash table records the sequence it reflects and is checked against the store at attach:
// a table persisted by a stale applier (or one that records no sequence) is rebuilt from the replica,
// never trusted to answer a resync (issue 11 item 2).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { blockHash } from '../../../common/checksum.js';
import { loadHashTableAt, saveHashTable } from '../../../common/hash-table.js';
import { silentLogger } from '../../../common/log.js';
import { leafHashes } from '../../../proto/range-hash.js';
import { Replica } from '../../../master-target/replica.js';
import { ReplicaHashes } from '../../../master-target/replica-hashes.js';

const BS = 4096;
const SIZE = 1 << 20;

async function setup(t: Test): Promise<{ dir: string; replica: Replica; data: Buffer }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-rh-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const data = randomBytes(SIZE);
  await fsp.writeFile(path.join(dir, 'replica.img'), data);
  const replica = await Replica.open(path.join(dir, 'replica.img'), SIZE);
  t.teardown(() => replica.close());
  return { dir, replica, data };
}

const zeros = (): BigUint64Array => new BigUint64Array(SIZE / BS).fill(blockHash(Buffer.alloc(BS)));

t.test('a table reflecting another sequence than the store applied is rebuilt from the replica', async (t) => {
  const { dir, replica, data } = await setup(t);
  // Persisted by an applier that went stale at seq 3 (it describes zeros); the store applied up to 5.
  await saveHashTable(path.join(dir, 'replica-hashes.bin'), BS, SIZE, zeros(), 3);
  const h = new ReplicaHashes(dir, SIZE, BS, silentLogger());
  await h.open(replica, { seq: 5, doneSeq: 5, staged: [] });
  t.same([...h.hashes], [...leafHashes(data, BS)], 'the table now describes the replica\'s data');
  t.equal(h.seq, 5, 'and reflects the applied sequence');
  t.equal((await loadHashTableAt(path.join(dir, 'replica-hashes.bin'), BS, SIZE))?.seq, 5, 'as recorded in the file');
});

t.test('a table one ahead of doneSeq with that differential staged is kept (it is applied again)', async (t) => {
  const { dir, replica } = await setup(t);
  await saveHashTable(path.join(dir, 'replica-hashes.bin'), BS, SIZE, zeros(), 6);
  const h = new ReplicaHashes(dir, SIZE, BS, silentLogger());
  await h.open(replica, { seq: 4, doneSeq: 5, staged: [6, 7] });
  t.same([...h.hashes], [...zeros()], 'loaded as is');
  t.equal(h.seq, 6);
});

t.test('a table saved for a group of staged differentials is kept; one ahead of every staged one is rebuilt', async (t) => {
  const { dir, replica, data } = await setup(t);
  // Group commit saved the table for 6..8 (seq 8), then crashed before doneSeq moved from 5.
  await saveHashTable(path.join(dir, 'replica-hashes.bin'), BS, SIZE, zeros(), 8);
  const kept = new ReplicaHashes(dir, SIZE, BS, silentLogger());
  await kept.open(replica, { seq: 4, doneSeq: 5, staged: [6, 7, 8] });
  t.same([...kept.hashes], [...zeros()], 'kept: the group is applied again up to 8');
  t.equal(kept.seq, 8);
  // The same table when 8 is not staged (nothing will re-apply it): not trusted.
  const other = new ReplicaHashes(dir, SIZE, BS, silentLogger());
  await other.open(replica, { seq: 4, doneSeq: 5, staged: [6, 7] });
  t.same([...other.hashes], [...leafHashes(data, BS)], 'rebuilt from the replica');
});

t.test('a version 1 table (no sequence) is rebuilt; a newer version is refused as such', async (t) => {
  const { dir, replica, data } = await setup(t);
  const file = path.join(dir, 'replica-hashes.bin');
  const body = Buffer.from(zeros().buffer);
  const head = Buffer.alloc(32);
  head.writeUInt32LE(0x48424d54, 0);
  head.writeUInt16LE(1, 4);
  head.writeUInt32LE(BS, 8);
  head.writeBigUInt64LE(BigInt(SIZE), 16);
  const { crc } = await import('../../../common/checksum.js');
  head.writeUInt32LE(crc(body), 24);
  head.writeUInt32LE(crc(head.subarray(0, 28)), 28);
  await fsp.writeFile(file, Buffer.concat([head, body]));
  t.equal((await loadHashTableAt(file, BS, SIZE))?.seq, null, 'version 1 reads, without a sequence');
  const h = new ReplicaHashes(dir, SIZE, BS, silentLogger());
  await h.open(replica, { seq: 0, doneSeq: 0, staged: [] });
  t.same([...h.hashes], [...leafHashes(data, BS)], 'and is rebuilt at attach');

  const newer = await fsp.readFile(file);
  newer.writeUInt16LE(9, 4);
  await fsp.writeFile(file, newer);
  await t.rejects(loadHashTableAt(file, BS, SIZE), { code: 'TM_ERR_STATE_CORRUPT', message: /newer format version 9/ });
});
