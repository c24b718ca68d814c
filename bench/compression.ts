// Compression: the process server's LZ4 (process-server/compressor.ts, native/lz4.ts) on the fan-in
// corpus's non-zero blocks in 1 MiB extents, as an initial replication brings them, in memory (no
// sockets, no cache files): CPU seconds per GiB over every thread of this process, next to the `lz4 -1`
// CLI on the same bytes and to lz4-napi (the binding used before) driven the way the code before did.
// Decompression the same way (proto/extent-codec.ts rawDataAsync vs lz4-napi).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compress, compressSync, uncompress, uncompressSync } from 'lz4-napi';
import { crc } from '../common/checksum.js';
import { lz4Version } from '../native/lz4.js';
import { Compressor, INLINE_BELOW } from '../process-server/compressor.js';
import { rawDataAsync } from '../proto/extent-codec.js';
import type { ExtentRecord } from '../proto/hrl.js';
import { makeCorpus, nonZeroBlocks } from './corpus.js';
import { cli } from './fan-in.js';
import { benchSizeMiB, fmt, GiB, MiB, which, WORK_DIR, type BenchResult, type Benchmark, type Figure, type Ratio } from './harness.js';

const EXTENT = 1024 * 1024;
/** Extents in flight, as the process server's receiver keeps up to 4 of a differential. */
const IN_FLIGHT = 4;
const REPEATS = 3;

export const compression: Benchmark = {
  description: 'process server LZ4 (native) vs lz4-napi vs the lz4 -1 CLI on the same bytes: CPU per GiB of compression and decompression, in memory',
  run,
};

interface Measured {
  cpuSeconds: number;
  wallSeconds: number;
  outBytes: number;
}

/** CPU (all threads of this process) and wall time of fn, best of REPEATS by CPU. */
async function measure(fn: () => Promise<number>): Promise<Measured> {
  let best: Measured | null = null;
  for (let i = 0; i < REPEATS; i++) {
    global.gc?.();
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const outBytes = await fn();
    const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    const m = { cpuSeconds: (c.user + c.system) / 1e6, wallSeconds, outBytes };
    if (best === null || m.cpuSeconds < best.cpuSeconds) best = m;
  }
  return best!;
}

/** Run fn over every item with at most IN_FLIGHT at once; returns the sum of what it gives. */
async function pooled<T>(items: T[], fn: (x: T) => Promise<number>): Promise<number> {
  let next = 0;
  let sum = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const v = await fn(items[next++]!);
      sum += v;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return sum;
}

function record(raw: Buffer, offset: number): ExtentRecord {
  return { offset, length: raw.length, crc32c: crc(raw), compression: 'NONE', storedLength: raw.length };
}

async function run(): Promise<BenchResult> {
  if (which('lz4') === null || which('bash') === null) throw new Error('compression needs lz4 and bash on PATH (Debian package: lz4)');
  const mib = benchSizeMiB(64, 'ext4 needs room');
  const work = path.join(WORK_DIR, 'compression');
  await fsp.rm(work, { recursive: true, force: true });
  await fsp.mkdir(work, { recursive: true });
  const corpus = path.join(work, 'corpus.img');
  const nonZero = path.join(work, 'nonzero.bin');
  try {
    console.log(`building a ${mib} MiB ext4 corpus (the fan-in corpus)...`);
    await makeCorpus(work, corpus, mib);
    await nonZeroBlocks(corpus, nonZero);
    const data = await fsp.readFile(nonZero);
    const extents: Array<{ e: ExtentRecord; raw: Buffer }> = [];
    for (let at = 0; at < data.length; at += EXTENT) {
      const raw = data.subarray(at, Math.min(at + EXTENT, data.length));
      extents.push({ e: record(raw, at), raw });
    }
    const gib = data.length / GiB;
    console.log(`  ${fmt(data.length / MiB, 0)} MiB of non-zero blocks, ${extents.length} extents of up to 1 MiB`);

    console.log('lz4 -1 CLI on the same bytes...');
    const cliRuns = [];
    for (let i = 0; i < REPEATS; i++) cliRuns.push(await cli('lz4 -1', 'lz4', ['-1', '-q'], nonZero, path.join(work, 'cli.out')));
    const lzCli = cliRuns.reduce((a, b) => (b.cpuSeconds < a.cpuSeconds ? b : a));

    console.log('process server Compressor (native LZ4)...');
    const stored: Array<{ record: ExtentRecord; stored: Buffer }> = new Array(extents.length);
    const native = await measure(async () => {
      const c = new Compressor('lz4');
      let i = 0;
      return pooled(extents.map((x) => [x, i++] as const), async ([x, k]) => {
        const out = await c.pack('bench', x.e, x.raw);
        stored[k] = out;
        return out.stored.length;
      });
    });

    console.log('lz4-napi as the code before drove it (async from 64 KiB, kept under 95%)...');
    const napi = await measure(() => pooled(extents, async (x) => {
      const packed = x.raw.length < INLINE_BELOW ? compressSync(x.raw) : await compress(x.raw);
      return packed.length < x.raw.length * 0.95 ? packed.length : x.raw.length;
    }));

    console.log('decompression: rawDataAsync (native) and lz4-napi on the stored extents...');
    const lz4Stored = stored.filter((s) => s.record.compression === 'LZ4');
    const lz4RawBytes = lz4Stored.reduce((n, s) => n + s.record.length, 0);
    const dNative = await measure(() => pooled(lz4Stored, async (s) => (await rawDataAsync(s.record, s.stored, 'bench', 1)).length));
    // with the same crc32c check rawDataAsync makes, so both rows do the same work
    const dNapi = await measure(() => pooled(lz4Stored, async (s) => {
      const raw = s.record.length < INLINE_BELOW ? uncompressSync(s.stored) : await uncompress(s.stored);
      if (crc(raw) !== s.record.crc32c) throw new Error('lz4-napi decoded an extent wrongly');
      return raw.length;
    }));

    const perGiB = (m: Measured, bytes = data.length): number => m.cpuSeconds / (bytes / GiB);
    const cliPerGiB = lzCli.cpuSeconds / gib;
    const figures: Figure[] = [
      { name: 'input (non-zero blocks)', value: data.length, unit: 'bytes' },
      { name: 'native LZ4 (Compressor): CPU per GiB', value: perGiB(native), unit: 's/GiB' },
      { name: 'native LZ4 (Compressor): throughput', value: data.length / MiB / native.wallSeconds, unit: 'MiB/s' },
      { name: 'native LZ4 (Compressor): ratio', value: data.length / native.outBytes, unit: 'x' },
      { name: 'lz4-napi: CPU per GiB', value: perGiB(napi), unit: 's/GiB' },
      { name: 'lz4-napi: throughput', value: data.length / MiB / napi.wallSeconds, unit: 'MiB/s' },
      { name: 'lz4-napi: ratio', value: data.length / napi.outBytes, unit: 'x' },
      { name: 'decompression, native (rawDataAsync, crc check included): CPU per GiB of raw', value: perGiB(dNative, lz4RawBytes), unit: 's/GiB' },
      { name: 'decompression, lz4-napi (crc check included): CPU per GiB of raw', value: perGiB(dNapi, lz4RawBytes), unit: 's/GiB' },
    ];
    const ratios: Ratio[] = [
      { name: 'native LZ4 CPU per GiB / lz4 -1 CLI CPU per GiB', numerator: 'native LZ4 (Compressor): CPU per GiB', denominator: 'lz4 -1: CPU per GiB', value: perGiB(native) / cliPerGiB },
      { name: 'lz4-napi CPU per GiB / lz4 -1 CLI CPU per GiB', numerator: 'lz4-napi: CPU per GiB', denominator: 'lz4 -1: CPU per GiB', value: perGiB(napi) / cliPerGiB },
      { name: 'native LZ4 ratio / lz4 -1 CLI ratio', numerator: 'native LZ4 (Compressor): ratio', denominator: 'lz4 -1: ratio', value: data.length / native.outBytes / (lzCli.inputBytes / lzCli.outputBytes) },
      { name: 'decompression CPU per GiB, native / lz4-napi', numerator: 'decompression, native', denominator: 'decompression, lz4-napi', value: perGiB(dNative, lz4RawBytes) / perGiB(dNapi, lz4RawBytes) },
    ];
    const table: string[][] = [['run', 'MiB/s', 'CPU s/GiB', 'ratio']];
    table.push([`lz4 -1 CLI (file to file)`, fmt(lzCli.inputBytes / MiB / lzCli.seconds), fmt(cliPerGiB, 2), fmt(lzCli.inputBytes / lzCli.outputBytes, 3)]);
    table.push(['Compressor, native LZ4', fmt(data.length / MiB / native.wallSeconds), fmt(perGiB(native), 2), fmt(data.length / native.outBytes, 3)]);
    table.push(['lz4-napi (code before)', fmt(data.length / MiB / napi.wallSeconds), fmt(perGiB(napi), 2), fmt(data.length / napi.outBytes, 3)]);
    table.push(['decompress, native + crc', fmt(lz4RawBytes / MiB / dNative.wallSeconds), fmt(perGiB(dNative, lz4RawBytes), 2), '-']);
    table.push(['decompress, lz4-napi + crc', fmt(lz4RawBytes / MiB / dNapi.wallSeconds), fmt(perGiB(dNapi, lz4RawBytes), 2), '-']);
    return {
      params: { corpusMiB: mib, extentBytes: EXTENT, inFlight: IN_FLIGHT, repeats: REPEATS, lz4Native: lz4Version(), lz4Cli: 'lz4 on PATH' },
      figures,
      references: [{ name: 'lz4 -1', description: 'lz4 -1 -c on the non-zero blocks file > file; bash times (best of 3 by CPU)', figures: [
        { name: 'CPU per GiB', value: cliPerGiB, unit: 's/GiB' },
        { name: 'throughput', value: lzCli.inputBytes / MiB / lzCli.seconds, unit: 'MiB/s' },
        { name: 'ratio', value: lzCli.inputBytes / lzCli.outputBytes, unit: 'x' },
      ] }],
      quoted: [],
      ratios,
      table,
      notes: [
        'CPU = process.cpuUsage() of this process (every thread: the event loop and the libuv pool) for the in-memory runs, bash `times` for the CLI (which also reads and writes its files); each is the best of 3 by CPU.',
        'The whole process server (receive, verify, cache writes, forwarding) is measured by the fan-in benchmark; this one isolates the compression it does.',
      ],
    };
  } finally {
    if (process.env.TIDEMARK_BENCH_KEEP !== '1') await fsp.rm(work, { recursive: true, force: true });
  }
}
