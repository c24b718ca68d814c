// Runs a daemon in the foreground: open, then on the first SIGTERM/SIGINT a graceful close bounded by a
// timeout; on the second, exit at once.
import type { Logger } from '../common/log.js';
import { codeOf } from '../common/errors.js';
import { keepFreedMemory } from '../native/index.js';

export interface Daemon {
  open(): Promise<void>;
  close(): Promise<void>;
}

const CLOSE_TIMEOUT_MS = 10_000;
/** Free heap top a daemon keeps mapped for its next differentials (native/src/malloc-tune.c says why). */
const KEEP_FREED_MIB = 128;

/** TIDEMARK_KEEP_FREED_MIB overrides the bound; 0 leaves the C library's own policy. */
function keepFreed(log: Logger): void {
  const env = process.env.TIDEMARK_KEEP_FREED_MIB;
  const mib = env === undefined || env === '' ? KEEP_FREED_MIB : Number(env);
  if (!Number.isInteger(mib) || mib < 0 || mib > 2047) {
    log.warn({ TIDEMARK_KEEP_FREED_MIB: env }, 'TIDEMARK_KEEP_FREED_MIB must be an integer 0..2047 (MiB); the C library\'s own policy stands');
    return;
  }
  if (mib === 0 || process.platform !== 'linux') return;
  try {
    const did = keepFreedMemory(mib * 1024 * 1024);
    if (did !== 'set') log.info({ result: did }, 'the C library\'s memory policy was not (wholly) changed');
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'could not set the C library\'s memory policy; going on with its own');
  }
}

export async function runDaemon(daemon: Daemon, log: Logger): Promise<void> {
  keepFreed(log);
  let signals = 0;
  const stop = (sig: string): void => {
    signals++;
    if (signals > 1) {
      log.warn({ sig }, 'second signal: exiting now');
      process.exit(130);
    }
    log.info({ sig }, 'stopping');
    const timer = setTimeout(() => {
      log.error('graceful stop timed out; exiting');
      process.exit(1);
    }, CLOSE_TIMEOUT_MS);
    timer.unref();
    daemon.close().then(() => process.exit(0), (e) => {
      log.error({ err: (e as Error).message }, 'error while stopping');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await daemon.open();
  } catch (e) {
    log.fatal({ code: codeOf(e), err: (e as Error).message }, 'could not start');
    process.exit(2);
  }
}
