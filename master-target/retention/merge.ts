// Merging segments: of all before-images of a block across consecutive segments, only the oldest one
// matters (it is the block's content before the first of them), so a merged stream keeps each block once.
// Compaction writes such a stream as one segment; recovery writes it onto a clone of the replica.
import { crc } from '../../common/checksum.js';
import { tmError } from '../../common/errors.js';
import { readSegment, type BeforeImage } from './segment.js';

/** Which blocks already have their oldest image: one bit per block. */
class BlockSet {
  private readonly bits: Uint8Array;
  constructor(blocks: number) {
    this.bits = new Uint8Array(Math.ceil(blocks / 8));
  }

  has(b: number): boolean {
    return (this.bits[b >> 3]! & (1 << (b & 7))) !== 0;
  }

  add(b: number): void {
    this.bits[b >> 3]! |= 1 << (b & 7);
  }
}

/**
 * The oldest before-image of every block the segments cover. `files` are consecutive segments, oldest
 * first; their images are read (and checksummed) in that order, and a block seen once is skipped after.
 */
export async function* oldestImages(files: readonly string[], blockSize: number, sizeBytes: number): AsyncGenerator<BeforeImage> {
  const seen = new BlockSet(Math.ceil(sizeBytes / blockSize));
  for (const file of files) {
    for await (const img of readSegment(file)) {
      if (img.offset % blockSize !== 0 || img.offset + img.data.length > sizeBytes) {
        throw tmError('TM_ERR_RETENTION_CORRUPT', `${file}: before-image at ${img.offset} (+${img.data.length}) is not within the volume's blocks`, { path: file });
      }
      const first = img.offset / blockSize;
      const blocks = Math.ceil(img.data.length / blockSize);
      let runStart = -1;
      const flush = (end: number): BeforeImage | null => {
        if (runStart < 0) return null;
        const from = (runStart - first) * blockSize;
        const to = Math.min(img.data.length, (end - first) * blockSize);
        const data = img.data.subarray(from, to);
        runStart = -1;
        return { offset: img.offset + from, data, crc32c: data.length === img.data.length ? img.crc32c : crc(data) };
      };
      for (let b = first; b < first + blocks; b++) {
        if (seen.has(b)) {
          const out = flush(b);
          if (out) yield out;
        } else {
          seen.add(b);
          if (runStart < 0) runStart = b;
        }
      }
      const out = flush(first + blocks);
      if (out) yield out;
    }
  }
}
