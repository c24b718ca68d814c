// GET /metrics of the three daemons, scraped while they replicate and parsed with a strict Prometheus
// text-format parser: the figures must mean what docs/OPERATIONS.md says. And `tidemark status` on the
// same chain.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { Lab, TIDEMARK_BIN, type DaemonName } from '../../lab/lab.js';
import { STATUS_PORT_FILE } from '../../common/status-server.js';
import { formatStatus } from '../../cli/status.js';
import { makeImage, scratchDir, sha256, sleep, startWriter } from './helpers.js';
import { parsePrometheusText, sampleValue, type Family } from './prom-text.js';

const SIZE_MIB = 16;
const MiB = 1 << 20;

async function scrape(lab: Lab, name: DaemonName): Promise<{ contentType: string; text: string }> {
  const port = Number(await fsp.readFile(path.join(lab.stateDirs[name], STATUS_PORT_FILE), 'utf8'));
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 3000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => (res.statusCode === 200 ? resolve({ contentType: String(res.headers['content-type']), text }) : reject(new Error(`HTTP ${res.statusCode}: ${text}`))));
    }).on('error', reject);
  });
}

const metrics = async (lab: Lab, name: DaemonName): Promise<Map<string, Family>> => parsePrometheusText((await scrape(lab, name)).text);

/** Lab.converged, for one volume only (the others in this test are refused on purpose). */
async function converged(lab: Lab, id: string, sinceMs: number): Promise<boolean> {
  const [a, m] = [await lab.status('agent'), await lab.status('mt')];
  const v = (a?.volumes as Record<string, unknown>[] | undefined)?.find((x) => x.id === id);
  const r = (m?.volumes as Record<string, unknown>[] | undefined)?.find((x) => x.id === id);
  return !!v && !!r && v.consistentAfterResync === true && v.lastCycleBytes === 0 && Number(v.lastCycleAt) > sinceMs && v.journalFiles === 0 && r.appliedSeq === v.lastSeq && r.consistent === true;
}

async function waitFor(what: string, ms: number, ok: () => Promise<boolean>, lab?: Lab): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${ms} ms${lab ? `\n${formatStatus((await Promise.all((['agent', 'ps', 'mt'] as const).map((d) => lab.status(d)))).filter((x) => x !== null))}` : ''}`);
    await sleep(250);
  }
}

t.test('the test parser rejects malformed exposition text', async (t) => {
  const good = '# HELP a_total A counter.\n# TYPE a_total counter\na_total{volume="v\\"1",hop="ps"} 3\n# TYPE b gauge\nb +Inf\nb{x="1"} -1.5e3 1700000000000\n';
  const fams = parsePrometheusText(good);
  t.equal(sampleValue(fams, 'a_total', { volume: 'v"1' }), 3, 'escaped label value read back');
  t.equal(sampleValue(fams, 'b', { x: '1' }), -1500, 'float with exponent, timestamp ignored');
  t.throws(() => sampleValue(fams, 'b'), 'two series of b match no labels: ambiguous');
  const bad: Record<string, string> = {
    'no value': 'a 1\nb\n',
    'value not a float': 'a one\n',
    'unquoted label value': 'a{x=1} 1\n',
    'unknown escape': 'a{x="\\t"} 1\n',
    'label given twice': 'a{x="1",x="2"} 1\n',
    'bad metric name': '1a 1\n',
    'bad label name': 'a{1x="1"} 1\n',
    'unterminated label value': 'a{x="1} 1\n',
    'trailing garbage': 'a 1 2 3\n',
    'bad timestamp': 'a 1 1.5\n',
    'second TYPE': '# TYPE a gauge\n# TYPE a counter\na 1\n',
    'TYPE after samples': 'a 1\n# TYPE a gauge\n',
    'unknown type': '# TYPE a meter\na 1\n',
    'family split in two groups': 'a 1\nb 2\na{x="1"} 3\n',
    'duplicate series': 'a{x="1"} 1\na{x="1"} 2\n',
    'negative counter': '# TYPE a_total counter\na_total -1\n',
    'sample name not of its type': '# TYPE h histogram\nh 1\n',
    'histogram without +Inf': '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    'histogram not cumulative': '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n',
    'no final newline': 'a 1',
  };
  for (const [why, text] of Object.entries(bad)) t.throws(() => parsePrometheusText(text), `rejects: ${why}`);
});

t.test('/metrics of agent, process server and master target while replicating', async (t) => {
  const dir = await scratchDir(t, 'metrics');
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await makeImage(source, SIZE_MIB, 4);
  // 4 MiB of text after the random data, so compression has something to do.
  const text = Buffer.from('tidemark replicates block volumes; this line compresses well. '.repeat(67_000).slice(0, 4 * MiB));
  const fh = await fsp.open(source, 'r+');
  await fh.write(text, 0, text.length, 8 * MiB);
  await fh.close();
  const lab = await Lab.create({ dir, volumes: [{ id: 'vol1', source, replica }], agent: { cycleIntervalMs: 300 } });
  t.teardown(() => lab.stopAll());
  for (const d of ['mt', 'ps', 'agent'] as const) lab.start(d);

  await waitFor('agent up', 30_000, async () => (await lab.status('agent')) !== null);
  const writer = startWriter(source, SIZE_MIB * MiB, 50);
  try {
    await sleep(2000);
    const mid = await metrics(lab, 'agent');
    t.equal(sampleValue(mid, 'tidemark_volume_size_bytes', { volume: 'vol1' }), SIZE_MIB * MiB, 'agent: volume size while replicating');
  } finally {
    await writer.stop();
  }
  const stoppedAt = Date.now();
  await waitFor('vol1 converged', 120_000, () => converged(lab, 'vol1', stoppedAt), lab);
  t.equal(await sha256(replica), await sha256(source), 'replica equals source');

  const scraped = { agent: await scrape(lab, 'agent'), ps: await scrape(lab, 'ps'), mt: await scrape(lab, 'mt') };
  for (const [d, s] of Object.entries(scraped)) t.match(s.contentType, /^text\/plain; version=0\.0\.4/, `${d}: Prometheus text content type`);
  const a = parsePrometheusText(scraped.agent.text);
  const p = parsePrometheusText(scraped.ps.text);
  const m = parsePrometheusText(scraped.mt.text);
  const aStatus = ((await lab.status('agent'))!.volumes as Record<string, unknown>[])[0]!;

  t.ok(a.has('process_cpu_seconds_total') && p.has('nodejs_heap_size_used_bytes') && m.has('process_resident_memory_bytes'), 'default process metrics on every daemon');
  for (const [d, f] of [['agent', a], ['ps', p], ['mt', m]] as const) {
    t.equal(sampleValue(f, 'tidemark_daemon_info', { hop: d }), 1, `${d}: tidemark_daemon_info`);
    for (const hop of [d]) {
      t.equal(sampleValue(f, 'tidemark_backlog_bytes', { volume: 'vol1', hop }), 0, `${d}: backlog 0 bytes after convergence`);
      t.equal(sampleValue(f, 'tidemark_backlog_differentials', { volume: 'vol1', hop }), 0, `${d}: backlog 0 differentials`);
    }
  }
  t.equal(sampleValue(a, 'tidemark_backlog_age_seconds', { volume: 'vol1', hop: 'agent' }), 0, 'agent: backlog age 0 when empty');
  t.equal(sampleValue(m, 'tidemark_backlog_age_seconds', { volume: 'vol1', hop: 'mt' }), 0, 'mt: backlog age 0 when empty');

  // Capture `none`: every differential is fuzzy, so there is no recovery point, and RPO says so.
  t.equal(sampleValue(a, 'tidemark_rpo_seconds', { volume: 'vol1', hop: 'agent' }), Infinity, 'agent: RPO +Inf without a recovery point');
  t.equal(sampleValue(m, 'tidemark_rpo_seconds', { volume: 'vol1', hop: 'mt' }), Infinity, 'mt: RPO +Inf without a recovery point');
  t.notOk(m.get('tidemark_recovery_point_timestamp_seconds')?.samples.length, 'no recovery point timestamp');

  const applied = sampleValue(m, 'tidemark_applied_bytes_total', { volume: 'vol1' })!;
  t.ok(applied >= 8 * MiB, `mt: bytes applied (${applied}) cover the 8 MiB of data`);
  t.equal(sampleValue(m, 'tidemark_applied_sequence', { volume: 'vol1' }), aStatus.lastSeq, 'mt: applied sequence = agent last journaled');
  t.equal(sampleValue(a, 'tidemark_last_sequence', { volume: 'vol1', hop: 'agent' }), aStatus.lastSeq, 'agent: last sequence');
  t.equal(sampleValue(a, 'tidemark_acked_sequence', { volume: 'vol1', hop: 'agent' }), aStatus.lastSeq, 'agent: everything acked');
  t.equal(sampleValue(p, 'tidemark_acked_sequence', { volume: 'vol1', hop: 'ps' }), aStatus.lastSeq, 'ps: everything forwarded');
  t.equal(sampleValue(m, 'tidemark_replica_consistent', { volume: 'vol1' }), 1, 'mt: replica consistent');
  t.ok(sampleValue(m, 'tidemark_replication_lag_seconds', { volume: 'vol1' })! >= 0, 'mt: lag');

  const sent = sampleValue(a, 'tidemark_sent_bytes_total', { hop: 'agent', peer: 'ps-1' })!;
  const psIn = sampleValue(p, 'tidemark_received_bytes_total', { hop: 'ps' })!;
  const fwd = sampleValue(p, 'tidemark_sent_bytes_total', { hop: 'ps', peer: 'mt-1' })!;
  const mtIn = sampleValue(m, 'tidemark_received_bytes_total', { hop: 'mt' })!;
  t.ok(sent >= 8 * MiB && psIn === sent, `bytes sent by the agent (${sent}) = received by the process server (${psIn}), nothing lost or resent`);
  t.ok(fwd > 0 && mtIn === fwd, `bytes forwarded (${fwd}) = received by the master target (${mtIn})`);
  t.equal(sampleValue(a, 'tidemark_peer_connected', { peer: 'ps-1' }), 1, 'agent: connected to ps-1');
  t.equal(sampleValue(p, 'tidemark_peer_connected', { peer: 'mt-1' }), 1, 'ps: connected to mt-1');

  const raw = sampleValue(p, 'tidemark_compression_input_bytes_total', { volume: 'vol1' })!;
  const stored = sampleValue(p, 'tidemark_compression_output_bytes_total', { volume: 'vol1' })!;
  const ratio = sampleValue(p, 'tidemark_compression_ratio', { volume: 'vol1' })!;
  t.ok(raw >= 8 * MiB && stored < raw, `ps: compression ${raw} -> ${stored} bytes`);
  t.ok(Math.abs(ratio - raw / stored) < 0.01 && ratio > 1.3, `ps: compression ratio ${ratio.toFixed(2)} (4 MiB of the data is text)`);
  t.equal(fwd, stored, 'ps: what is forwarded is what compression stored');

  t.equal(sampleValue(a, 'tidemark_tracker_mode', { volume: 'vol1', mode: 'data' }), 1, 'agent: data mode');
  t.equal(sampleValue(a, 'tidemark_tracker_mode', { volume: 'vol1', mode: 'bitmap' }), 0, 'agent: not bitmap mode');
  t.equal(sampleValue(a, 'tidemark_resync_active', { volume: 'vol1' }), 0, 'agent: initial resync over');
  t.equal(sampleValue(a, 'tidemark_resync_progress_ratio', { volume: 'vol1' }), 1, 'agent: resync pass went through the whole volume');
  for (const [d, f] of [['agent', a], ['ps', p], ['mt', m]] as const) t.equal(sampleValue(f, 'tidemark_errors_total', { code: 'TM_ERR_VOLUME_NOT_ASSIGNED' }), undefined, `${d}: no unknown volume yet`);

  // The status table of the same chain.
  const st = await promisify(execFile)(process.execPath, [TIDEMARK_BIN, 'status', '--config', lab.configs.agent, '--config', lab.configs.ps, '--config', lab.configs.mt]);
  const row = st.stdout.split('\n').find((l) => l.startsWith('vol1 '));
  t.ok(row, `a row for vol1:\n${st.stdout}`);
  const seq = String(aStatus.lastSeq);
  t.match(row, new RegExp(`\\b${seq}/${seq}/${seq}/${seq}\\b`), 'journaled/cached/staged/applied sequences all equal');
  t.match(row, /scan\/none data/, 'tracker, capture and mode');
  t.match(row, /\bok$/, 'healthy');
  t.match(st.stdout, /agent agent-1: connected to ps-1/, 'agent line');
  t.match(st.stdout, /process server ps-1: .*connected to mt-1/, 'process server line');
  t.equal(st.stderr, '', 'every daemon answered');

  // Offer volumes nobody expects: one the process server does not know, one the master target does not.
  const edit = async (file: string, add: (c: { volumes: Record<string, unknown>[] }) => void): Promise<void> => {
    const c = JSON.parse(await fsp.readFile(file, 'utf8')) as { volumes: Record<string, unknown>[] };
    add(c);
    await fsp.writeFile(file, JSON.stringify(c));
  };
  for (const g of ['ghost-ps', 'ghost-mt']) await makeImage(path.join(dir, `${g}.img`), 1, 1);
  await lab.stop('agent');
  await lab.stop('ps');
  await edit(lab.configs.agent, (c) => c.volumes.push({ id: 'ghost-ps', path: path.join(dir, 'ghost-ps.img') }, { id: 'ghost-mt', path: path.join(dir, 'ghost-mt.img') }));
  await edit(lab.configs.ps, (c) => c.volumes.push({ id: 'ghost-mt', agent: 'agent-1', masterTarget: 'mt-1' }));
  lab.start('ps');
  lab.start('agent');
  const unknown = async (d: DaemonName): Promise<number> => {
    const f = await metrics(lab, d).catch(() => null); // not up yet
    return (f && sampleValue(f, 'tidemark_errors_total', { code: 'TM_ERR_VOLUME_NOT_ASSIGNED' })) ?? 0;
  };
  await waitFor('unknown volumes counted', 30_000, async () => (await unknown('agent')) > 0 && (await unknown('ps')) > 0 && (await unknown('mt')) > 0);
  t.pass('tidemark_errors_total{code="TM_ERR_VOLUME_NOT_ASSIGNED"} (an unknown volume is refused as not served, naming none) rose on agent (refused by the process server), process server (refused it; refused by the master target) and master target (refused it)');
  const a2 = await metrics(lab, 'agent');
  t.equal(sampleValue(a2, 'tidemark_rpo_seconds', { volume: 'ghost-ps', hop: 'agent' }), Infinity, 'an RPO series for every agent volume');
  // A volume not ok makes `status` exit 3 (docs/OPERATIONS.md, "tidemark status"), with the table on stdout.
  const after = await promisify(execFile)(process.execPath, [TIDEMARK_BIN, 'status', '--config', lab.configs.agent, '--config', lab.configs.ps, '--config', lab.configs.mt]).then(
    (r) => ({ ...r, code: 0 }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  t.equal(after.code, 3, 'status exits 3: a volume is not ok');
  const ghost = after.stdout.split('\n').find((l) => l.startsWith('ghost-mt '));
  t.match(ghost, /\d+\/\d+\/-\/- .*REFUSED by mt-1: .*TM_ERR_VOLUME_NOT_ASSIGNED.*not at mt: no master target given lists ghost-mt$/, `a volume the master target lacks: "-" for its sequences there, and said in its health with the refusal:\n${after.stdout}`);
  const wrote = startWriter(source, SIZE_MIB * MiB, 50);
  await sleep(1000).finally(() => wrote.stop());
  const again = Date.now();
  await waitFor('vol1 converged again', 120_000, () => converged(lab, 'vol1', again), lab);
  t.equal(await sha256(replica), await sha256(source), 'vol1 replicated on beside the refused volumes');
});
