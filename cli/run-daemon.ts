// Runs a daemon in the foreground: open, then on the first SIGTERM/SIGINT a graceful close bounded by a
// timeout; on the second, exit at once.
import type { Logger } from '../common/log.js';
import { codeOf } from '../common/errors.js';

export interface Daemon {
  open(): Promise<void>;
  close(): Promise<void>;
}

const CLOSE_TIMEOUT_MS = 10_000;

export async function runDaemon(daemon: Daemon, log: Logger): Promise<void> {
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
