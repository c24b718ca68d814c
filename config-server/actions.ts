// Operator actions from the website reach a daemon through its authenticated operator channel: its remote
// operator port over mutual TLS when the config gives the daemon a `remote` (config-server/remote.ts; the
// daemon checks this server's certificate, role and revocation), else its operator socket
// (<stateDir>/operator.sock, common/operator-socket.ts) on this host, where the daemon checks the relay's
// uid. The configuration server is a relay for the logged-in operator, who is named in the audit log and
// sent to the daemon, which logs it. docs/SECURITY.md, "Configuration server".
import path from 'node:path';
import { operatorRequest } from '../common/operator-socket.js';
import { tmError } from '../common/errors.js';
import type { ConfigServerConfig, DaemonEntry } from './config.js';
import { csPath } from './config.js';
import type { VolumeRow } from './fleet.js';
import type { VolumeAction } from './pages.js';
import type { RemoteOperator } from './remote.js';

/** Long enough for a recovery of a large volume. */
const LONG_MS = 24 * 3_600_000;

export class ActionRelay {
  constructor(private readonly cfg: ConfigServerConfig, private readonly remote: RemoteOperator | null = null) {}

  /** The daemon `name` of `role`, reachable through its remote operator port or operator socket, or a clear error. */
  daemon(name: string | null, role: string, volume: string): DaemonEntry {
    const d = this.cfg.daemons.find((x) => x.name === name);
    if (!d) throw tmError('TM_ERR_UNKNOWN_VOLUME', `no ${role} reports volume ${volume} (is it up?)`, { volume });
    if (d.remote === undefined && d.stateDir === undefined) throw tmError('TM_ERR_UNSUPPORTED', `${role} ${d.name} has neither remote (its operatorListen) nor stateDir (its operator socket on this host) in the configuration server's config: no way to act on it`, { volume });
    return d;
  }

  /** Whether actions can reach `d` at all. */
  reachable(d: DaemonEntry | undefined): boolean {
    return d !== undefined && (d.remote !== undefined || d.stateDir !== undefined);
  }

  /** Ask `role`'s daemon of this volume, for the website user `by` when there is one. */
  ask(d: DaemonEntry, action: string, params: URLSearchParams, timeoutMs = LONG_MS, by?: string): Promise<Record<string, unknown>> {
    if (d.remote !== undefined) {
      if (!this.remote) throw tmError('TM_ERR_CONFIG_INVALID', `${d.name} has a remote operator port but this server has no client identity for it (tls.ca)`, { key: 'tls.ca' });
      return this.remote.ask(d, action, params, { timeoutMs, ...(by ? { onBehalfOf: by } : {}) });
    }
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
    if (!d || !this.reachable(d)) return null;
    const all = await this.ask(d, 'test-failover-list', new URLSearchParams(), 5000).catch(() => null);
    if (!all) return null;
    const list = Array.isArray(all) ? (all as unknown[]) : Array.isArray(all.rehearsals) ? (all.rehearsals as unknown[]) : Object.values(all);
    return list.filter((x) => (x as { volume?: string }).volume === row.id);
  }

  async run(action: VolumeAction, row: VolumeRow, by?: string): Promise<Record<string, unknown>> {
    const volume = new URLSearchParams({ volume: row.id });
    switch (action) {
      case 'test-failover-start':
        return this.ask(this.mtOf(row), 'test-failover-start', new URLSearchParams({ volume: row.id, latest: 'true' }), LONG_MS, by);
      case 'test-failover-cleanup':
        return this.ask(this.mtOf(row), 'test-failover-cleanup', volume, LONG_MS, by);
      case 'recover': {
        if (this.cfg.recoveryDir === undefined) throw tmError('TM_ERR_USAGE', 'recover from the website writes under recoveryDir, which the configuration server\'s config does not set');
        // A path on the master target's host: relative names are resolved here, so a remote one needs an absolute recoveryDir.
        const mt = this.mtOf(row);
        if (mt.remote !== undefined && !path.isAbsolute(this.cfg.recoveryDir)) throw tmError('TM_ERR_USAGE', `recoveryDir must be an absolute path on ${mt.name}'s host (under its recovery.roots) for a master target reached remotely`);
        const out = path.join(csPath(this.cfg, this.cfg.recoveryDir), `${row.id}-${new Date().toISOString().replace(/[:.]/g, '')}.img`);
        return this.ask(this.mtOf(row), 'recover', new URLSearchParams({ volume: row.id, latest: 'true', out }), LONG_MS, by);
      }
      case 'resync':
        return this.ask(this.agentOf(row), 'resync', new URLSearchParams({ volume: row.id, mode: 'resync' }), LONG_MS, by);
      case 'drain':
        return this.ask(this.agentOf(row), 'drain', volume, LONG_MS, by);
      case 'resume':
        return this.ask(this.agentOf(row), 'resume', volume, LONG_MS, by);
    }
  }
}
