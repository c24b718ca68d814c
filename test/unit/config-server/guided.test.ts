// The guided sequence's state in the store: a step that was running when the configuration server stopped
// is failed at the next start (so it can be retried) and the sequence is where it was; the reverse step is
// not checked done while the server does not watch the reverse daemons, and says which to add.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { silentLogger } from '../../../common/log.js';
import { ActionRelay } from '../../../config-server/actions.js';
import { Collector } from '../../../config-server/collector.js';
import { checked, configServerSchema, type ConfigServerConfig } from '../../../config-server/config.js';
import { validateConfig } from '../../../common/config.js';
import { GuidedRunner, type GuidedSequence } from '../../../config-server/guided.js';
import { SqliteStore } from '../../../config-server/sqlite-store.js';

t.test('a running step is failed by a restart; the reverse step names the daemons to watch', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-cs-guided-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const cfg = checked({ ...validateConfig(configServerSchema, { stateDir: dir, tls: { cert: 'c', key: 'k' }, listen: {}, recoveryDir: dir, daemons: [{ name: 'agent-1', role: 'agent', stateDir: 'a' }, { name: 'mt-1', role: 'master-target', stateDir: 'm' }] }, 'cs.json'), configDir: dir } as ConfigServerConfig, 'cs.json');
  let store = await SqliteStore.open(dir);
  const body: Omit<GuidedSequence, 'id' | 'volume' | 'state'> = {
    kind: 'planned', user: 'olga', startedMs: 1, agent: 'agent-1', masterTarget: 'mt-1', out: path.join(dir, 'vol1.img'), finalSeq: 7, failbackSeq: null,
    steps: [
      { id: 'drain', state: 'done', detail: 'final point #7', by: 'olga', atMs: 2 },
      { id: 'failover', state: 'running', detail: 'recovering', by: 'olga', atMs: 3 },
      ...(['reverse', 'failback', 'resume', 'stop-reverse'] as const).map((id) => ({ id, state: 'pending' as const, detail: '', by: null, atMs: null })),
    ],
  };
  const id = store.putGuided({ volume: 'vol1', state: 'active', body: body as unknown as Record<string, unknown> });
  store.close();
  store = await SqliteStore.open(dir);
  t.teardown(() => store.close());
  const collector = new Collector(cfg.daemons, (p) => path.resolve(dir, p), store, 1000, silentLogger());
  const runner = new GuidedRunner(cfg, store, new ActionRelay(cfg), collector, silentLogger());
  const g = runner.get(id)!;
  t.equal(g.steps[0]!.state, 'done', 'the drain stays done');
  t.equal(g.steps[1]!.state, 'failed', 'the recovery that was running is failed');
  t.match(g.steps[1]!.detail, /interrupted.*confirm it again to retry/);
  t.equal(GuidedRunner.next(g)!.id, 'failover', 'and is the step to confirm next');
  t.equal(g.finalSeq, 7, 'the final point is remembered');
  t.throws(() => runner.confirm(id, 'reverse', 'olga'), /at step "failover"/, 'a later step cannot be confirmed out of order');
  t.match(runner.check(g, 'reverse'), /does not watch the reverse daemons mt-1\.agent, mt-1\.ps, agent-1\.mt/, 'the reverse step names the daemons to add');
  t.equal(runner.commands(g).register.length, 3);
});

t.test('with operator ports for the reverse daemons, the reverse command gives them and the entries to add are remote', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-cs-guided-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const failback = { dir: '/srv/dr', pki: '/etc/tidemark/ca', primaryHost: '10.0.1.7', secondaryHost: '10.0.2.5', agentOperatorPort: 7441, psOperatorPort: 7442, mtOperatorPort: 7443, operatorClients: ['cs-1'] };
  const cfg = checked({ ...validateConfig(configServerSchema, { stateDir: dir, tls: { cert: 'c', key: 'k' }, listen: {}, recoveryDir: dir, failback, daemons: [{ name: 'agent-1', role: 'agent', stateDir: 'a' }, { name: 'mt-1', role: 'master-target', stateDir: 'm' }] }, 'cs.json'), configDir: dir } as ConfigServerConfig, 'cs.json');
  const store = await SqliteStore.open(dir);
  t.teardown(() => store.close());
  const body: Omit<GuidedSequence, 'id' | 'volume' | 'state'> = {
    kind: 'planned', user: 'olga', startedMs: 1, agent: 'agent-1', masterTarget: 'mt-1', out: '/srv/vol1.img', finalSeq: 7, failbackSeq: null,
    steps: (['drain', 'failover', 'reverse', 'failback', 'resume', 'stop-reverse'] as const).map((id) => ({ id, state: 'pending' as const, detail: '', by: null, atMs: null })),
  };
  const id = store.putGuided({ volume: 'vol1', state: 'active', body: body as unknown as Record<string, unknown> });
  const runner = new GuidedRunner(cfg, store, new ActionRelay(cfg), new Collector(cfg.daemons, (p) => path.resolve(dir, p), store, 1000, silentLogger()), silentLogger());
  const c = runner.commands(runner.get(id)!);
  t.match(c.reverse[0], /--agent-operator-port 7441 --ps-operator-port 7442 --mt-operator-port 7443 --operator-clients cs-1/, 'the reverse command asks for the operator ports');
  t.same(c.register.map((r) => r.remote), [{ host: '10.0.2.5', port: 7441 }, { host: '10.0.2.5', port: 7442 }, { host: '10.0.1.7', port: 7443 }], 'each daemon to add is reached at its operator port on its host');
  t.ok(c.register.every((r) => r.stateDir === undefined && r.standby === true), 'with no state folder on this host');
});
