// A tracker knows which blocks of a volume were written since they were last captured.
// Implementations: scan.ts (hash and compare; portable), blocktrace.ts (kernel block tracepoints).
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
  /**
   * The extents end at a crash-consistent instant of the volume whatever the view (data mode: a slice of
   * the write stream at a request boundary with nothing lost before it), so the differential is a CRASH
   * point even from a live view.
   */
  point?: boolean;
  /**
   * Asked for a stream marker (`until`, data mode): the extents end exactly at that marker (taken with
   * the records before it, none after), or the marker is given up (point is then false). Until then the
   * view is held and later collections go on towards it.
   */
  marked?: boolean;
  /** Called once the extents are durable in the journal: they are clean from now on. */
  commit(): Promise<void>;
}

export interface Tracker {
  readonly kind: string;
  /** Load tracking state. Returns why the volume needs a checksum resync first, or null. */
  open(): Promise<string | null>;
  /** Called just before the cycle's capture: whatever the tracker knows by now must be in the view. */
  beforeCapture?(): Promise<void>;
  /**
   * Read dirty extents (up to maxBytes) from `view`, a consistent or live view of the volume. `cont`: the
   * same view as the previous call, whose collection said `more` (trackers that can finish a point over
   * several differentials go on with it; others may ignore it). `until`: a marker the capture put in the
   * write stream (CapturedView.streamMark; data mode only): end the extents there once it is reached.
   */
  collect(view: VolumeReader, maxBytes: number, cont?: boolean, until?: number): Promise<Collection>;
  /** These ranges must be sent again (their journal copy was lost or corrupt). */
  invalidate(ranges: { offset: number; length: number }[]): Promise<void>;
  /**
   * A resync brought blocks [firstBlock, +leaves.length) in step with the source as it read them
   * (leaves = their hashes then); called once that resync differential is durable in the journal.
   */
  adoptBaseline(firstBlock: number, leaves: BigUint64Array): Promise<void>;
  /**
   * For blocks [firstBlock, +leaves.length) just read with these hashes: true where the tracker holds the
   * block as captured (journaled) with exactly these contents, false where a write is still on its way.
   * A verify calls a difference from the replica damage only where this is true.
   */
  settled?(firstBlock: number, leaves: BigUint64Array): Promise<boolean[]>;
  /** Blocks known dirty and not yet journaled, where the tracker keeps such a map. */
  readonly dirtyBlocks?: number;
  /** Counters shown in status (blocktrace: events, drains, losses). */
  readonly stats?: Readonly<Record<string, number>>;
  close(): Promise<void>;
}
