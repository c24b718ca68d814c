// Reverse replication after a failover: the configuration of the three daemons that protect the
// failed-over volume (now the source, at the secondary site) onto the original volume (now the replica,
// at the primary site). Plain JSON in the same layout as a lab folder (lab/lab.ts): agent.json,
// process-server.json, master-target.json, state folders beside them, certificates in pki/. The agent and
// process server run at the secondary site, the master target at the primary site.

/** File and folder names inside a reverse folder (the same as a lab's). */
export const REVERSE_LAYOUT = {
  agent: 'agent.json',
  ps: 'process-server.json',
  mt: 'master-target.json',
  agentState: 'agent-state',
  psCache: 'ps-cache',
  mtState: 'mt-state',
  pki: 'pki',
} as const;

export interface ReversePlanInput {
  volume: string;
  /** The failed-over volume at the secondary site: the reverse source. */
  source: string;
  /** The original volume at the primary site (the forward agent's volume path): the reverse replica. */
  original: string;
  /** Node names of the forward direction, from which the reverse names are made. */
  forward: { agent: string; masterTarget: string };
  secondaryHost: string;
  primaryHost: string;
  psPort: number;
  mtPort: number;
  /** reflink where the failed-over volume's filesystem can clone it (points for the planned failback), else none. */
  capture: 'reflink' | 'none';
  blockSize: number;
  cycleIntervalMs: number;
  /** The forward master target volume's `retention`, as written, so the primary site keeps points too. */
  retention?: unknown;
  /**
   * Remote operator ports (`operatorListen`) to give the reverse daemons, each on its daemon's host, so a
   * configuration server on another host can drive the failback; `clients`: the certificate names allowed.
   */
  operatorPorts?: { agent?: number; ps?: number; mt?: number; clients?: string[] };
}

export interface ReverseNames {
  agent: string;
  ps: string;
  mt: string;
}

export interface ReversePlan {
  names: ReverseNames;
  agent: Record<string, unknown>;
  ps: Record<string, unknown>;
  mt: Record<string, unknown>;
}

/** The reverse agent and process server run on the forward master target's host; the reverse master target on the forward agent's. */
export function reverseNames(forward: { agent: string; masterTarget: string }): ReverseNames {
  const name = (base: string, suffix: string): string => (base.length + suffix.length <= 64 ? `${base}${suffix}` : `reverse${suffix}`);
  return { agent: name(forward.masterTarget, '.agent'), ps: name(forward.masterTarget, '.ps'), mt: name(forward.agent, '.mt') };
}

export function reversePlan(i: ReversePlanInput): ReversePlan {
  const names = reverseNames(i.forward);
  const L = REVERSE_LAYOUT;
  const tls = (n: string): Record<string, string> => ({ ca: `${L.pki}/ca.crt`, cert: `${L.pki}/${n}.crt`, key: `${L.pki}/${n}.key` });
  const op = i.operatorPorts;
  const operatorListen = (host: string, port: number | undefined): Record<string, unknown> =>
    (port === undefined ? {} : { operatorListen: { host, port, ...(op?.clients ? { clients: op.clients } : {}) } });
  return {
    names,
    agent: {
      name: names.agent,
      stateDir: L.agentState,
      tls: tls(names.agent),
      processServer: { name: names.ps, host: i.secondaryHost, port: i.psPort },
      blockSize: i.blockSize,
      cycleIntervalMs: i.cycleIntervalMs,
      volumes: [{ id: i.volume, path: i.source, tracker: 'scan', capture: i.capture }],
      ...operatorListen(i.secondaryHost, op?.agent),
    },
    ps: {
      name: names.ps,
      cacheDir: L.psCache,
      tls: tls(names.ps),
      listen: { host: i.secondaryHost, port: i.psPort },
      masterTargets: [{ name: names.mt, host: i.primaryHost, port: i.mtPort }],
      volumes: [{ id: i.volume, agent: names.agent, masterTarget: names.mt }],
      ...operatorListen(i.secondaryHost, op?.ps),
    },
    mt: {
      name: names.mt,
      stateDir: L.mtState,
      tls: tls(names.mt),
      listen: { host: i.primaryHost, port: i.mtPort },
      volumes: [{ id: i.volume, replica: i.original, processServers: [names.ps], ...(i.retention === undefined ? {} : { retention: i.retention }) }],
      ...operatorListen(i.primaryHost, op?.mt),
    },
  };
}
