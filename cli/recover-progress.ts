// Progress of a recovery (recover, failover): the phases' bytes come from the running master target's
// status (`recoveries`, polled every second while the operator socket request runs) or, offline, from
// recoverPoint's own callback. cli/progress.ts draws them.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { STATUS_PORT_FILE } from '../common/status-server.js';
import type { RecoverProgress } from '../master-target/recover.js';
import { meter } from './progress.js';
import { fetchStatus } from './status.js';

const PHASE = { copy: 'copying the replica', rollback: 'rolling back to the point', verify: 'verifying every block' } as const;

/** Run `work` (given the offline progress callback) while showing the recovery of `out` on stderr. */
export async function withRecoverProgress<T>(stateDir: string, volume: string, out: string, json: boolean, work: (progress: (p: RecoverProgress) => void) => Promise<T>): Promise<T> {
  const m = meter(`recover ${volume}`, { json });
  let last: RecoverProgress | null = null;
  const show = (p: RecoverProgress): void => {
    last = p;
    m.update(p.doneBytes, p.totalBytes, PHASE[p.phase]);
  };
  const target = path.resolve(out);
  const look = (): void => {
    void (async () => {
      const port = Number(readFileSync(path.join(stateDir, STATUS_PORT_FILE), 'utf8'));
      const snap = await fetchStatus(port);
      const r = (snap.recoveries as Array<RecoverProgress & { out: string }> | undefined)?.find((x) => x.out === target);
      if (r && r.totalBytes > 0) show(r);
    })().catch(() => {}); // offline, or the daemon busy: the callback (or the next poll) tells
  };
  const first = setTimeout(look, 200);
  const poll = setInterval(look, 1000);
  try {
    const result = await work(show);
    const done: RecoverProgress | null = last;
    if (done !== null) show({ ...(done as RecoverProgress), doneBytes: (done as RecoverProgress).totalBytes }); // the last phase, complete
    return result;
  } finally {
    clearTimeout(first);
    clearInterval(poll);
    m.stop();
  }
}
