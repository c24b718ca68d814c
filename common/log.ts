// One pino root logger per process; each component takes a child with fixed keys.
import { pino, type Logger } from 'pino';

export type { Logger };

export function rootLogger(name: string, level = process.env.TIDEMARK_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}

/** A logger that drops everything, for tools and tests that drive components in-process. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
