// Bounds on what a peer may ask a receiver to hold, checked before anything is allocated, decompressed
// or written: the volume geometry an OpenVolume declares, each extent against that geometry, and the size
// of one differential. Agents never produce anything past these (docs/SECURITY.md "Resource bounds").
import { DEFAULTS } from '../common/defaults.js';
import { tmError } from '../common/errors.js';
import type { ExtentRecord } from './hrl.js';

/** Largest extent any agent makes (trackers and resync cut runs at 1 MiB; a block is at most 1 MiB). */
export const MAX_EXTENT_BYTES = 1024 * 1024;
/** Block sizes an agent may be configured with (agent/config.ts): powers of two in this range. */
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 1024 * 1024;
/** Default cap on one differential's (uncompressed) bytes at a receiver (config `maxDiffBytes`). */
export const DEFAULT_MAX_DIFF_BYTES = DEFAULTS.transfer.maxDiffBytes;
/** Largest volume: 2^50 bytes (1 PiB), far above any disk, far below where offsets lose precision. */
export const MAX_VOLUME_BYTES = 2 ** 50;

export interface Geometry {
  volumeSize: number;
  blockSize: number;
}

/** Refuse an OpenVolume whose size or block size no agent would declare. */
export function checkGeometry(volumeId: string, sizeBytes: number, blockSize: number): void {
  const pow2 = Number.isInteger(blockSize) && blockSize > 0 && (blockSize & (blockSize - 1)) === 0;
  if (!pow2 || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_VOLUME_BYTES) {
    throw tmError('TM_ERR_VOLUME_GEOMETRY', `volume ${volumeId}: size ${sizeBytes} in ${blockSize}-byte blocks is out of range (block size a power of two ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE}, size 1..${MAX_VOLUME_BYTES})`, { volume: volumeId });
  }
}

/** Longest extent for this block size. */
export function maxExtentBytes(blockSize: number): number {
  return Math.max(MAX_EXTENT_BYTES, blockSize);
}

/** LZ4 never grows a block by more than this (the format's worst case), so a larger stored form is a lie. */
export function lz4Bound(length: number): number {
  return length + Math.ceil(length / 255) + 16;
}

/**
 * An extent must hold data, lie inside the volume, start on a block boundary, cover whole blocks (except the
 * volume's last, partial block), be no longer than maxExtentBytes, and declare a stored size its
 * compression can produce. Throws TM_ERR_EXTENT_BOUNDS.
 */
export function checkExtent(e: ExtentRecord, g: Geometry, volumeId: string, seq: number): void {
  const bs = g.blockSize;
  const end = e.offset + e.length;
  const why =
    !(bs > 0) ? 'the volume has no geometry'
    : !Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.length < 0 ? 'offset or length is not a byte count'
    : e.length === 0 ? 'it is empty'
    : e.length > maxExtentBytes(bs) ? `it is longer than ${maxExtentBytes(bs)} bytes`
    : end > g.volumeSize ? `it ends past the volume's ${g.volumeSize} bytes`
    : e.offset % bs !== 0 ? `it does not start on a ${bs}-byte block boundary`
    : e.length % bs !== 0 && end !== g.volumeSize ? `it does not cover whole ${bs}-byte blocks`
    : e.compression === 'NONE' && e.storedLength !== e.length ? `its stored size ${e.storedLength} differs from its length`
    : e.compression === 'LZ4' && e.storedLength > lz4Bound(e.length) ? `its stored size ${e.storedLength} is more than LZ4 can make of ${e.length} bytes`
    : null;
  if (why !== null) {
    throw tmError('TM_ERR_EXTENT_BOUNDS', `volume ${volumeId} seq ${seq}: extent [${e.offset}, +${e.length}) refused: ${why}`, { volume: volumeId, seq, offset: e.offset, length: e.length });
  }
}

/** The most extents a differential of `maxDiffBytes` can hold: all but the last cover a whole block. */
export function maxExtentCount(maxDiffBytes: number, blockSize: number): number {
  return Math.floor(maxDiffBytes / blockSize) + 1;
}

/** Refuse a differential once its declared extent count or its bytes so far exceed the cap. */
export function checkDiffSize(volumeId: string, seq: number, what: { extentCount?: number; bytes?: number }, maxDiffBytes: number, blockSize: number): void {
  const count = what.extentCount ?? 0;
  const bytes = what.bytes ?? 0;
  if (count > maxExtentCount(maxDiffBytes, blockSize) || bytes > maxDiffBytes) {
    const said = bytes > maxDiffBytes ? `${bytes} bytes` : `${count} extents`;
    throw tmError('TM_ERR_DIFF_TOO_LARGE', `volume ${volumeId} seq ${seq}: differential of ${said} exceeds this receiver's maxDiffBytes (${maxDiffBytes})`, { volume: volumeId, seq, maxDiffBytes });
  }
}
