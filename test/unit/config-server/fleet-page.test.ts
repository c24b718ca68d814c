// The fleet page groups volumes per protected machine: each machine's section holds exactly its volumes,
// its summary has the worst RPO, the summed backlog and how many volumes are not ok, machines with trouble
// come first, and every value is escaped.
import t from 'tap';
import { machineGroups, type VolumeRow } from '../../../config-server/fleet.js';
import { fleetTable } from '../../../config-server/pages.js';

const row = (id: string, agent: string | null, o: Partial<VolumeRow> = {}): VolumeRow => ({
  id, agent, processServer: 'ps-1', masterTarget: 'mt-1', mode: 'data', rpoMs: 1000, agentBacklog: 10, psBacklog: 20, mtBacklog: 30, lastSeq: 5, appliedSeq: 5, appliedBytes: 100,
  lastCrashPoint: null, lastAppPoint: null, resyncPercent: null, health: 'ok', ok: true, ...o,
});

t.test('machines and their volumes', async (t) => {
  const rows = [row('a1', 'alpha'), row('a2', 'alpha', { rpoMs: 9000 }), row('b1', 'bravo', { ok: false, health: 'process-server ps-1 DOWN', rpoMs: null }), row('c1', 'charlie', { agentBacklog: null })];
  const g = machineGroups(rows);
  t.same(g.map((x) => x.machine.name), ['bravo', 'alpha', 'charlie'], 'the machine with trouble first, then by name');
  t.same(g[1]!.machine, { name: 'alpha', volumes: 2, notOk: 0, worstRpoMs: 9000, backlog: 120 }, 'alpha: two volumes, worst RPO, summed backlog');
  t.same(g[0]!.machine, { name: 'bravo', volumes: 1, notOk: 1, worstRpoMs: null, backlog: 60 }, 'bravo: one volume not ok, no RPO known');
  t.equal(g[2]!.machine.backlog, 50, 'an unknown backlog counts as nothing');

  const page = fleetTable(rows, 7, 10_000).text;
  const section = (name: string): string => new RegExp(`<section class="machine[^"]*" id="machine-${name}"[^]*?</section>`).exec(page)?.[0] ?? '';
  t.match(section('alpha'), /id="vol-a1"[^]*id="vol-a2"/, 'alpha\'s section lists its two volumes');
  t.notMatch(section('alpha'), /vol-b1|vol-c1/, 'and no other machine\'s');
  t.match(section('bravo'), /class="machine bad"[^]*data-k="health" data-v="1"[^]*1 not ok/, 'bravo is marked, with one volume not ok');
  t.ok(page.indexOf('machine-bravo') < page.indexOf('machine-alpha'), 'bravo is drawn first');
  const evil = fleetTable([row('x', '<img src=x onerror=alert(1)>')], 1, 1000).text;
  t.notMatch(evil, /<img/, 'a machine name is escaped');

  const lazy = fleetTable(rows, 7, 10_000, 2).text;
  const sectionOf = (name: string): string => new RegExp(`<section class="machine[^"]*" id="machine-${name}"[^]*?</section>`).exec(lazy)?.[0] ?? '';
  t.match(sectionOf('bravo'), /id="vol-b1"/, 'a machine with trouble is always drawn by the server');
  t.match(sectionOf('alpha'), /id="vol-a1"/, 'the first machines are drawn up to the budget');
  t.match(sectionOf('charlie'), /data-lazy="1"/, 'past it, a machine is left to the page\'s script');
  t.notMatch(sectionOf('charlie'), /vol-c1/, 'without its rows');
  t.match(sectionOf('charlie'), /data-k="volumes" data-v="1"/, 'but with its summary');
});
