// An app-consistent view held for a bounded time: the application is held (a frozen filesystem, a
// quiesced writer) from the capture instant until the point's blocks are read (settle) or the bound
// passes, whichever comes first; `end` lets it go exactly once. Past the bound the view is no longer a
// point: settle() says so and the differential goes out fuzzy.
import type { VolumeReader } from '../volume.js';
import type { CapturedView } from './capture.js';

export interface HeldPointOptions {
  view: VolumeReader;
  /** null: an app-consistent point without a name (agent/capture/tag-cadence.ts). */
  tag: string | null;
  atMs: number;
  /** When the hold must end (ms since the epoch). */
  deadline: number;
  /** Let the application go (thaw, post script). Called once. */
  end(): Promise<void>;
  /** The bound passed before the blocks were read. */
  expired(): void;
  /** After the hold ended, at release (freeze: its post script). */
  after?(): Promise<void>;
  /** The point was made within the bound. */
  made(): void;
}

export function heldPoint(o: HeldPointOptions): CapturedView {
  let ended: Promise<void> | null = null;
  let late = false;
  const end = (): Promise<void> => (ended ??= o.end());
  const bound = setTimeout(() => {
    late = true;
    o.expired();
    void end().catch(() => {});
  }, Math.max(0, o.deadline - Date.now()));
  return {
    view: o.view,
    consistency: 'APP',
    tags: o.tag === null ? [] : [o.tag],
    atMs: o.atMs,
    settle: async () => {
      clearTimeout(bound);
      await end();
      return !late;
    },
    release: async () => {
      clearTimeout(bound);
      await end().catch(() => {});
      await o.after?.();
      if (!late) o.made();
    },
  };
}
