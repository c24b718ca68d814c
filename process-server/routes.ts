// Which master target each cached volume goes to: the one place the process server answers that.
import type { PsConfig } from './config.js';

export class Routes {
  private readonly byVolume: ReadonlyMap<string, string>;

  constructor(private readonly volumes: PsConfig['volumes']) {
    this.byVolume = new Map(volumes.map((v) => [v.id, v.masterTarget]));
  }

  /** The master target a volume is forwarded to, or null for a volume not configured here. */
  masterTargetOf(volumeId: string): string | null {
    return this.byVolume.get(volumeId) ?? null;
  }

  /** The volumes forwarded to one master target, in configuration order. */
  volumesOf(masterTarget: string): string[] {
    return this.volumes.filter((v) => v.masterTarget === masterTarget).map((v) => v.id);
  }
}
