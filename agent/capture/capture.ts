// A capture provider gives a cycle its view of the volume, and that view decides the point's class.
// Implementations: none.ts (live volume, fuzzy). reflink and freeze arrive with kernel tracking.
import type { Consistency } from '../../proto/messages.js';
import type { VolumeReader } from '../volume.js';

export interface CapturedView {
  view: VolumeReader;
  consistency: Consistency;
  tags: string[];
  /** When the view was taken (ms since the epoch). */
  atMs: number;
  release(): Promise<void>;
}

export interface Capture {
  readonly kind: string;
  begin(): Promise<CapturedView>;
}
