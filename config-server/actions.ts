// Operator actions from the website reach a daemon only through its operator socket
// (<stateDir>/operator.sock, common/operator-socket.ts) on this host: the configuration server is a
// relay for the logged-in operator, who is named in the audit log; the daemon checks the relay's uid
// (root or the daemon's user) as for any `tidemark` command. docs/SECURITY.md, "Configuration server".
import path from 'node:path';
import { operatorRequest } from '../common/operator-socket.js';
import { tmError } from '../common/errors.js';
import type { ConfigServerConfig, DaemonEntry } from './config.js';
import { csPath } from './config.js';
import type { VolumeRow } from './fleet.js';
import type { VolumeAction } from './pages.js';

/** Long enough for a recovery of a large volume. */
const LONG_MS = 24 * 3_600_000;

export class ActionRelay {
  constructor(private readonly cfg: ConfigServerConfig) {}

  /** The daemon `name` of `role`, reachable through its operator socket, or a clear error. */
  daemon(name: string | null, role: string, volume: string): DaemonEntry {
    const d = this.cfg.daemons.find((x) => x.name === name);
    if (!d) throw tmError('TM_ERR_UNKNOWN_VOLUME', `no ${role} reports volume ${volume} (is it up?)`, { volume });
    if (d.stateDir === undefined) throw tmError('TM_ERR_UNSUPPORTED', `${role} ${d.name} has no stateDir in the configuration server's config: actions reach a daemon only through its operator socket on this host`, { volume });
    return d;
  }

  /** Ask `role`'s daemon of this volume. */
  ask(d: DaemonEntry, action: string, params: URLSearchParams, timeoutMs = LONG_MS): Promise<Record<string, unknown>> {
    return operatorRequest(csPath(this.cfg, d.stateDir!), action, params, timeoutMs);
  }

  mtOf(row: VolumeRow): DaemonEntry {
    return this.daemon(row.masterTarget, 'master target', row.id);
  }

  agentOf(row: VolumeRow): DaemonEntry {
    return this.daemon(row.agent, 'agent', row.id);
  }

  /** The master target's running test failovers of this volume, or null when it cannot be asked. */
  async testFailovers(row: VolumeRow): Promise<unknown[] | null> {
    const d = this.cfg.daemons.find((x) => x.name === row.masterTarget);
    if (!d?.stateDir) return null;
    const all = await this.ask(d, 'test-failover-list', new URLSearchParams(), 5000).catch(() => null);
    if (!all) return null;
    const list = Array.isArray(all) ? (all as unknown[]) : Array.isArray(all.rehearsals) ? (all.rehearsals as unknown[]) : Object.values(all);
    return list.filter((x) => (x as { volume?: string }).volume === row.id);
  }

  async run(action: VolumeAction, row: VolumeRow): Promise<Record<string, unknown>> {
    const volume = new URLSearchParams({ volume: row.id });
    switch (action) {
      case 'test-failover-start':
        return this.ask(this.mtOf(row), 'test-failover-start', new URLSearchParams({ volume: row.id, latest: 'true' }));
      case 'test-failover-cleanup':
        return this.ask(this.mtOf(row), 'test-failover-cleanup', volume);
      case 'recover': {
        if (this.cfg.recoveryDir === undefined) throw tmError('TM_ERR_USAGE', 'recover from the website writes under recoveryDir, which the configuration server\'s config does not set');
        const out = path.join(csPath(this.cfg, this.cfg.recoveryDir), `${row.id}-${new Date().toISOString().replace(/[:.]/g, '')}.img`);
        return this.ask(this.mtOf(row), 'recover', new URLSearchParams({ volume: row.id, latest: 'true', out }));
      }
      case 'resync':
        return this.ask(this.agentOf(row), 'resync', new URLSearchParams({ volume: row.id, mode: 'resync' }));
      case 'drain':
        return this.ask(this.agentOf(row), 'drain', volume);
      case 'resume':
        return this.ask(this.agentOf(row), 'resume', volume);
    }
  }
}
