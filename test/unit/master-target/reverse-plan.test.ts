// The configs `tidemark reverse` writes: they load as the daemons load them, point the right way, and name
// their nodes after the forward ones.
import t from 'tap';
import { agentConfigSchema } from '../../../agent/config.js';
import { validateConfig } from '../../../common/config.js';
import { mtConfigSchema } from '../../../master-target/config.js';
import { reverseNames, reversePlan, type ReversePlanInput } from '../../../master-target/failover/reverse-plan.js';
import { psConfigSchema } from '../../../process-server/config.js';

const input: ReversePlanInput = {
  volume: 'db',
  source: '/srv/secondary/db-failover.img',
  original: '/dev/nvme1n1',
  forward: { agent: 'db-host', masterTarget: 'mt-1' },
  secondaryHost: '10.0.2.5',
  primaryHost: '10.0.1.7',
  psPort: 7411,
  mtPort: 7421,
  capture: 'reflink',
  blockSize: 4096,
  cycleIntervalMs: 1000,
  retention: { window: '24h' },
};

t.test('the reverse configs are valid and run the other way', async (t) => {
  const plan = reversePlan(input);
  const agent = validateConfig(agentConfigSchema, plan.agent);
  const ps = validateConfig(psConfigSchema, plan.ps);
  const mt = validateConfig(mtConfigSchema, plan.mt);
  t.strictSame(plan.names, { agent: 'mt-1.agent', ps: 'mt-1.ps', mt: 'db-host.mt' }, 'agent and process server on the secondary site, master target on the primary');
  t.same(agent.volumes[0], { id: 'db', path: input.source, tracker: 'scan', capture: 'reflink' }, 'the agent protects the failed-over volume');
  t.same(agent.processServer, { name: 'mt-1.ps', host: '10.0.2.5', port: 7411 }, 'the agent pins the reverse process server');
  t.same(mt.volumes[0]?.processServers, ['mt-1.ps'], 'only the reverse process server may send the volume back');
  t.same(ps.masterTargets, [{ name: 'db-host.mt', host: '10.0.1.7', port: 7421 }], 'the process server forwards to the primary site');
  t.same(ps.volumes, [{ id: 'db', agent: 'mt-1.agent', masterTarget: 'db-host.mt' }]);
  t.equal(mt.volumes[0]?.replica, '/dev/nvme1n1', 'the original volume is the replica');
  t.equal(mt.volumes[0]?.retention?.policy.windowMs, 24 * 3_600_000, 'the forward retention is kept');
  t.equal(agent.tls.cert, 'pki/mt-1.agent.crt');
});

t.test('without forward retention there is none; long names fall back', async (t) => {
  const { retention: _, ...rest } = input;
  const mt = validateConfig(mtConfigSchema, reversePlan(rest).mt);
  t.equal(mt.volumes[0]?.retention, undefined);
  const long = 'x'.repeat(62);
  t.strictSame(reverseNames({ agent: long, masterTarget: long }), { agent: 'reverse.agent', ps: 'reverse.ps', mt: 'reverse.mt' }, 'a name that would pass 64 characters');
});
