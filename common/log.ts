// One pino root logger per process; each component takes a child with fixed keys.
import { pino, type Logger } from 'pino';

export type { Logger };

const CODES = Symbol('tidemark.loggedCodes');
const WARN = 40;

export function rootLogger(name: string, level = process.env.TIDEMARK_LOG_LEVEL ?? 'info'): Logger {
  // Warnings and errors carrying a `code` are counted here, for the daemon's tidemark_errors_total
  // (common/metrics.ts): the log line is already where every failure is reported, so nothing else
  // has to remember to count it.
  const codes = new Map<string, number>();
  const log = pino({
    name,
    level,
    base: { pid: process.pid },
    hooks: {
      logMethod(args, method, lvl) {
        const o = args[0] as unknown;
        if (lvl >= WARN && typeof o === 'object' && o !== null && typeof (o as { code?: unknown }).code === 'string') {
          const code = (o as { code: string }).code;
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
        return method.apply(this, args);
      },
    },
  });
  Object.defineProperty(log, CODES, { value: codes });
  return log;
}

/**
 * Warnings and errors logged with a `code` by this logger's tree, by code, since it was made (children
 * inherit the count from their root through the prototype chain pino builds them with). Empty for a
 * logger not made by rootLogger, or when the level hides warnings.
 */
export function loggedCodes(log: Logger): ReadonlyMap<string, number> {
  return (log as unknown as Record<symbol, Map<string, number> | undefined>)[CODES] ?? new Map<string, number>();
}

/** A logger that drops everything, for tools and tests that drive components in-process. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
