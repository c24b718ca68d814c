// Shared by the agent's unit tests: one protected volume on a real image file in a temp dir, with the
// real scan tracker, journal and resync, and a VolumeReplicator over what is on disk (a restarted agent),
// its collaborators optionally given faults (test/unit/faults.ts).
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { silentLogger } from '../../../common/log.js';
import type { Capture } from '../../../agent/capture/capture.js';
import { NoCapture } from '../../../agent/capture/none.js';
import { Journal } from '../../../agent/journal.js';
import { VolumeReplicator } from '../../../agent/replicator.js';
import { Resync } from '../../../agent/resync.js';
import { ScanTracker } from '../../../agent/trackers/scan.js';
import type { Tracker } from '../../../agent/trackers/tracker.js';
import { Volume } from '../../../agent/volume.js';
import { Rng } from '../../seed.js';
import { withFaults } from '../faults.js';

export const BS = 4096;
export const BLOCKS = 96;
export const SIZE = BLOCKS * BS;
export const log = silentLogger();

export interface Lab { dir: string; source: string; rng: Rng; id: string }

export async function lab(t: Test, name: string, id = 'v1'): Promise<Lab> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-replicator-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const rng = new Rng(`replicator:${name}`);
  const source = path.join(dir, 'source.img');
  await fsp.writeFile(source, rng.bytes(SIZE));
  return { dir, source, rng, id };
}

export interface Faults { journal?: (j: Journal) => Partial<Journal>; tracker?: (tr: Tracker) => Partial<Tracker>; capture?: (c: Capture, volume: Volume) => Capture }

/** A replicator over what is on disk now (a restarted agent), its collaborators optionally given faults. */
export async function replicator(t: Test, l: Lab, faults: Faults = {}): Promise<{ r: VolumeReplicator; journal: Journal; volumesDir: string }> {
  const vdir = path.join(l.dir, 'volumes', l.id);
  await fsp.mkdir(vdir, { recursive: true });
  const volume = await Volume.open(l.source);
  t.teardown(() => volume.close());
  const journal = new Journal(vdir, l.id, log);
  await journal.open({ sizeBytes: SIZE, blockSize: BS });
  const tracker = new ScanTracker(vdir, SIZE, BS, log);
  await tracker.open();
  const live = new NoCapture(volume);
  const capture = faults.capture ? faults.capture(live, volume) : live;
  const j = withFaults(journal, faults.journal?.(journal));
  const tr = withFaults<Tracker>(tracker, faults.tracker?.(tracker));
  const resync = new Resync(vdir, l.id, SIZE, BS, { capture, tracker: tr, journal: j, log, windowBytes: SIZE, live, ask: () => Promise.reject(new Error('no resync in this test')) });
  await resync.open();
  const r = new VolumeReplicator(l.id, volume, tr, capture, j, resync, { maxDiffBytes: SIZE, journalQuotaBytes: 64 * SIZE, cycleIntervalMs: 0, bitmapAfterMs: 60_000, unreachableMs: () => 0, log });
  t.teardown(() => r.close());
  return { r, journal, volumesDir: path.join(l.dir, 'volumes') };
}

/** Every differential the journal holds, applied in sequence order onto a zeroed image. */
export async function replay(journal: Journal): Promise<Buffer> {
  const image = Buffer.alloc(SIZE);
  for (const seq of journal.pending()) {
    const diff = await journal.load(seq, () => Promise.reject(new Error(`journal file ${seq} damaged`)));
    for (const e of diff.extents) e.data.copy(image, e.offset);
  }
  return image;
}

/** Overwrite a few random runs of blocks of the source, as an application would. */
export async function scribble(l: Lab): Promise<void> {
  const fh = await fsp.open(l.source, 'r+');
  for (let i = 0; i < 5; i++) {
    const blocks = l.rng.int(1, 4);
    await fh.write(l.rng.bytes(blocks * BS), 0, blocks * BS, l.rng.int(0, BLOCKS - blocks) * BS);
  }
  await fh.close();
}

