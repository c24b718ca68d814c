// `none`: read the live volume. The data may change while it is read, so the result is fuzzy:
// not a recovery point. The replica becomes consistent again at the next snapshot or tag.
import type { Volume } from '../volume.js';
import type { Capture, CapturedView } from './capture.js';

export class NoCapture implements Capture {
  readonly kind = 'none';
  constructor(private readonly volume: Volume) {}

  async begin(): Promise<CapturedView> {
    return { view: this.volume, consistency: 'FUZZY', tags: [], atMs: Date.now(), release: async () => {} };
  }
}
