// How the command line reaches a daemon's operator actions: through its operator socket in the state
// folder (common/operator-socket.ts), as root. Whether the daemon runs is decided by the state folder's
// lock (common/state-lock.ts), never by a status port that anyone could be listening on: with the lock
// free, an offline command takes it and works on the state itself, so no daemon can start under it.
import { resolveFrom } from '../common/config.js';
import { codeOf, tmError } from '../common/errors.js';
import { operatorRequest } from '../common/operator-socket.js';
import { lockHolder, lockStateDir } from '../common/state-lock.js';
import { loadAgentConfig } from '../agent/config.js';

export function agentStateDir(configFile: string): string {
  const cfg = loadAgentConfig(configFile);
  return resolveFrom(cfg.configDir, cfg.stateDir);
}

/** An operator action of the daemon of `stateDir`; a daemon that is not running is said so plainly. */
export async function ask(stateDir: string, action: string, params: URLSearchParams, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  try {
    return await operatorRequest(stateDir, action, params, timeoutMs);
  } catch (e) {
    if (codeOf(e) !== 'TM_ERR_CONNECTION' || (e as { context?: { path?: string } }).context?.path === undefined) throw e;
    // Only a hint: taking the lock to look would stop a daemon that starts at that moment.
    const pid = await lockHolder(stateDir);
    const alive = pid !== null && pid !== process.pid && (() => { try { process.kill(pid, 0); return true; } catch { return false; } })();
    if (alive) throw tmError('TM_ERR_STATE_LOCKED', `${stateDir} may be held by pid ${pid}, which does not answer on its operator socket: a daemon still starting, or another tidemark command working offline; try again when it is done (${(e as Error).message})`, { path: stateDir, pid });
    throw tmError('TM_ERR_CONNECTION', `no daemon is running on ${stateDir}: ${(e as Error).message}`, { path: stateDir });
  }
}

/**
 * Run `online` when a daemon holds `stateDir`, else `offline` while this command holds it. A missing
 * folder has nothing to lock (and nothing to work on: `offline` says so).
 */
export async function onlineOrOffline<T>(stateDir: string, what: string, online: () => Promise<T>, offline: () => Promise<T>): Promise<T> {
  let lock;
  try {
    lock = await lockStateDir(stateDir, what, { create: false });
  } catch (e) {
    if (codeOf(e) === 'TM_ERR_STATE_LOCKED') return online();
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    return offline();
  }
  try {
    return await offline();
  } finally {
    await lock.release();
  }
}
