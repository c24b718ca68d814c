// `tidemark status --server <url>` (the fleet as the configuration server sees it) and `tidemark plan
// run|cleanup` (a recovery plan run on the configuration server, followed step by step).
import { age, bytes } from './status.js';
import { csGet, csLogin, csPost, type CsOptions } from './cs-client.js';
import { tmError } from '../common/errors.js';

interface Fleet {
  daemons: Array<{ name: string; role: string; up: boolean; cause: string | null }>;
  volumes: Array<{ id: string; agent: string | null; mode: string; rpoMs: number | null; agentBacklog: number | null; psBacklog: number | null; mtBacklog: number | null; appliedSeq: number | null; appliedBytes: number | null; health: string }>;
  alerts: Array<{ name: string; severity: string; target: string; summary: string }>;
}

export function formatFleet(f: Fleet): string {
  const rows = [['VOLUME', 'MACHINE', 'MODE', 'RPO', 'AGENT', 'PS', 'MT', 'APPLIED', 'HEALTH'], ...f.volumes.map((v) => [
    v.id, v.agent ?? '-', v.mode, v.rpoMs === null ? '-' : age(v.rpoMs), bytes(v.agentBacklog), bytes(v.psBacklog), bytes(v.mtBacklog),
    v.appliedSeq === null ? '-' : `#${v.appliedSeq} ${bytes(v.appliedBytes)}`, v.health,
  ])];
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return [
    ...f.daemons.map((d) => `${d.role} ${d.name}: ${d.up ? 'up' : `DOWN: ${d.cause ?? ''}`}`),
    '',
    ...rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()),
    ...(f.alerts.length ? ['', 'alerts:', ...f.alerts.map((a) => `  ${a.name} (${a.severity}) ${a.target}: ${a.summary}`)] : []),
  ].join('\n');
}

export async function serverStatus(o: CsOptions, json: boolean): Promise<void> {
  const s = await csLogin(o);
  const f = await csGet<Fleet>(s, '/api/fleet');
  console.log(json ? JSON.stringify(f, null, 2) : formatFleet(f));
}

interface Run { id: number; state: string; report: string; steps: Array<{ group: string; phase: string; name: string; state: string }> }

/** Start the plan on the server and follow it; exit status 0 only if it succeeded. */
export async function planRun(name: string, test: boolean, o: CsOptions & { json?: boolean }): Promise<number> {
  const s = await csLogin(o);
  const r = await csPost(s, `/plans/${encodeURIComponent(name)}/run`, { confirm: test ? 'run-test' : 'run-failover' });
  const id = /^\/runs\/(\d+)$/.exec(r.location ?? '')?.[1];
  if (!id) throw tmError('TM_ERR_PEER_ERROR', `the configuration server did not start plan ${name}`);
  if (!o.json) console.log(`plan ${name}: run #${id} (${test ? 'test' : 'FAILOVER'}) started: ${s.base.origin}/runs/${id}`);
  const seen = new Map<number, string>();
  for (;;) {
    const run = await csGet<Run>(s, `/api/runs/${id}`);
    run.steps.forEach((st, i) => {
      if (seen.get(i) !== st.state && st.state !== 'pending') {
        seen.set(i, st.state);
        if (!o.json) console.log(`  ${st.group} / ${st.phase}: ${st.name}: ${st.state}${st.state === 'waiting-approval' ? ` (approve on ${s.base.origin}/runs/${id})` : ''}`);
      }
    });
    if (run.state === 'succeeded' || run.state === 'failed') {
      console.log(o.json ? JSON.stringify(run, null, 2) : `\n${run.report}`);
      return run.state === 'succeeded' ? 0 : 1;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}

export async function planCleanup(run: string, o: CsOptions): Promise<void> {
  const s = await csLogin(o);
  const r = await csPost(s, `/runs/${encodeURIComponent(run)}/cleanup`, { confirm: 'cleanup' });
  console.log(/<pre id="detail">([^<]*)<\/pre>/.exec(r.body)?.[1] ?? 'cleaned up');
}
