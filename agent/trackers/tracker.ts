// A tracker knows which blocks of a volume were written since they were last captured.
// Implementations: scan.ts (hash and compare; portable). Kernel tracking arrives as blocktrace.ts.
import type { VolumeReader } from '../volume.js';

export interface DirtyExtent {
  offset: number;
  length: number;
  data: Buffer;
  crc32c: number;
}

export interface Collection {
  extents: DirtyExtent[];
  bytes: number;
  /** True when maxBytes stopped the collection before it saw every dirty block. */
  more: boolean;
  /** Called once the extents are durable in the journal: they are clean from now on. */
  commit(): Promise<void>;
}

export interface Tracker {
  readonly kind: string;
  /** `hasHistory`: the volume was replicated before, so missing tracking state means lost tracking. */
  open(hasHistory: boolean): Promise<void>;
  /** Read dirty extents (up to maxBytes) from `view`, a consistent or live view of the volume. */
  collect(view: VolumeReader, maxBytes: number): Promise<Collection>;
  /** These ranges must be sent again (their journal copy was lost or corrupt). */
  invalidate(ranges: { offset: number; length: number }[]): Promise<void>;
  /** Everything must be compared again (tracking was lost). */
  invalidateAll(): Promise<void>;
  close(): Promise<void>;
}
