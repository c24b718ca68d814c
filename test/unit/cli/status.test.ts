// `tidemark status` output from status snapshots shaped as the daemons return them (GET /status):
// one row per volume across the chain, daemon lines, and the warnings an operator must see.
import t from 'tap';
import { formatStatus, volumeHealth } from '../../../cli/status.js';
import { terminalWidth, wrap } from '../../../cli/status-table.js';

const NOW = 1_800_000_000_000;
const WIDE = { width: Infinity };
const MiB = 1 << 20;

function agent(over: Record<string, unknown> = {}, uploader: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    role: 'agent', name: 'agent-1', pid: 1,
    uploader: { connected: true, peer: 'ps-1', diffsSent: 42, bytesSent: 40 * MiB, lastError: null, lastAckAt: NOW, downSince: 0, backpressure: false, backpressureReason: '', backpressureSince: 0, ...uploader },
    volumes: [{
      id: 'db', path: '/dev/loop3', sizeBytes: 1 << 30, tracker: 'blocktrace', capture: 'reflink', mode: 'data', modeReason: '', modeSince: 0, dirtyBlocks: 0,
      trackerStats: { events: 10, drains: 5, lost: 0, lastDrainMs: 1 }, captureStats: null,
      resync: { active: false, mode: 'resync', reason: 'no tracking baseline', percent: 100, etaMs: 0, bytesSent: 0 },
      consistentAfterResync: true, lastSeq: 42, ackedSeq: 41, journalFiles: 1, journalBytes: MiB, backlogAgeMs: 12_000,
      lastCycleAt: NOW, lastCycleBytes: 0, lastCrashPoint: { seq: 42, atMs: NOW - 3000, tags: [] }, lastAppPoint: null, ...over,
    }],
  };
}

function ps(over: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    role: 'process-server', name: 'ps-1', pid: 2, port: 7410,
    receiver: { diffsReceived: 41, bytesReceived: 39 * MiB, duplicatesSkipped: 0 },
    forwarders: { 'mt-1': { connected: true, peer: 'mt-1', diffsSent: 41, bytesSent: 20 * MiB, lastError: null, lastAckAt: NOW, downSince: 0, backpressure: false } },
    cache: { quotaBytes: 10 * 1024 * MiB, usedBytes: 1024 * MiB, freePercent: 90, health: 'ok', reasons: [], backpressure: false, acceptDelayMs: 0, filesystemAvailBytes: 50 * 1024 * MiB },
    throttle: { rateBytesPerSec: 10 * MiB, activeRule: { index: 0, days: 'mon-fri', from: '08:00', to: '18:00' }, waitingVolumes: ['db'], bytesPassed: 20 * MiB },
    volumes: [{ id: 'db', storedSeq: 41, forwardedSeq: 40, backlogFiles: 1, backlogBytes: 2 * MiB, backlogAgeMs: 5000, rawBytesIn: 40 * MiB, storedBytesIn: 20 * MiB, compression: { rawBytes: 40 * MiB, storedBytes: 20 * MiB, ratio: 2, cpuMs: 300, skippedExtents: 1, compressedExtents: 9 }, ...over }],
    ...top,
  };
}

function mt(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    role: 'master-target', name: 'mt-1', pid: 3, port: 7420,
    receiver: { diffsReceived: 40, bytesReceived: 20 * MiB, duplicatesSkipped: 1 },
    volumes: [{
      id: 'db', replica: '/srv/replica.img', storedSeq: 40, backlogFiles: 0, backlogBytes: 0, backlogAgeMs: 0,
      lastCrashPoint: { seq: 40, atMs: NOW - 4000, consistency: 'CRASH', tags: [], appliedAt: NOW - 3000 },
      lastAppPoint: { seq: 38, atMs: NOW - 150_000, consistency: 'APP', tags: ['nightly'], appliedAt: NOW - 140_000 },
      retention: { points: 120, bytes: 64 * MiB, oldestPoint: { seq: 2, atMs: NOW - 7_200_000, consistency: 'CRASH', tags: [], appliedAt: 0 }, alert: null, paused: null, lastError: null },
      consistent: true, appliedSeq: 40, appliedBytes: 30 * MiB, lastAppliedAt: NOW - 1000, lagMs: 1500, lastConsistency: 'CRASH', lastError: null, ...over,
    }],
  };
}

const lines = (out: string): string[] => out.split('\n');
const row = (out: string, id: string): string[] => (lines(out).find((l) => l.startsWith(`${id} `)) ?? '').split(/ {2,}/);

t.test('a healthy chain: one row with every hop, and a line per daemon', async (t) => {
  const out = formatStatus([agent(), ps(), mt()], NOW, WIDE);
  const header = lines(out).find((l) => l.startsWith('VOLUME'))!.split(/ {2,}/);
  t.same(header, ['VOLUME', 'AGENT', 'JOURNAL', 'PS CACHE', 'RATIO', 'MT STAGING', 'SEQ jrnl/ps/mt/applied', 'LAG', 'CRASH POINT', 'APP POINT', 'RETAINED', 'HEALTH']);
  t.same(row(out, 'db'), ['db', 'blocktrace/reflink data', '1.0 MiB 12s', '2.0 MiB 5s', '2.00x', '0', '42/41/40/40', '1.5s', '#40 4s ago', "'nightly' #38 3m ago", '120 pts back 2h, 64.0 MiB', 'ok']);
  t.match(out, /^agent agent-1: connected to ps-1, sent 40\.0 MiB in 42 differentials$/m);
  t.match(out, /^process server ps-1: received 39\.0 MiB in 41 differentials \(0 duplicates skipped\); compressed 40\.0→20\.0 MiB \(2\.00x\); connected to mt-1, sent 20\.0 MiB in 41 differentials; cache 1\.00 GiB of 10\.00 GiB used \(90% free, ok\); throttle 10\.0 MiB\/s \(rule 0 mon-fri 08:00-18:00\), 1 volume waiting \(db\), passed 20\.0 MiB$/m);
  t.match(out, /^master target mt-1: received 20\.0 MiB in 40 differentials \(1 duplicates skipped\)$/m);
  t.notMatch(out, /warnings:/, 'nothing to warn about');
});

t.test('a volume whose compression rests says so after its ratio', async (t) => {
  const resting = ps({ compression: { rawBytes: 40 * MiB, storedBytes: 38 * MiB, ratio: 1.05, cpuMs: 300, skippedExtents: 9, compressedExtents: 1, state: 'resting', lastWindowSavingPercent: 5.2, rests: 1, restedBytes: 8 * MiB } });
  t.equal(row(formatStatus([agent(), resting, mt()], NOW, WIDE), 'db')[4], '1.05x rest');
  t.equal(row(formatStatus([agent(), ps({ compression: { rawBytes: 40 * MiB, storedBytes: 20 * MiB, ratio: 2, state: 'lz4' } }), mt()], NOW, WIDE), 'db')[4], '2.00x', 'nothing more while LZ4 is tried');
});

t.test('trouble shows in the health column with its cause and, in full, under warnings', async (t) => {
  const trouble = [
    agent({ mode: 'bitmap', modeReason: 'journal quota reached (1073741824 of 1073741824 bytes)', dirtyBlocks: 12, resync: { active: true, mode: 'resync', reason: 'no tracking baseline', percent: 45, etaMs: 30_000, bytesSent: 12 * MiB }, consistentAfterResync: false }, { connected: false, lastError: 'TM_ERR_CONNECTION: connect ECONNREFUSED', downSince: NOW - 20_000 }),
    ps({}, { cache: { quotaBytes: 100, usedBytes: 95, freePercent: 5, health: 'critical', reasons: ['cache 5.0% free'], backpressure: true, acceptDelayMs: 0 }, forwarders: { 'mt-1': { connected: false, diffsSent: 0, bytesSent: 0, lastError: 'TM_ERR_CONNECTION: gone', downSince: NOW - 60_000 } } }),
    mt({ consistent: false, lastError: 'TM_ERR_IO: EIO', retention: { points: 3, bytes: 90 * MiB, oldestPoint: null, alert: 'retention log 90% of its 104857600-byte cap', paused: 'retention log full: apply paused', lastError: null } }),
  ];
  const out = formatStatus(trouble, NOW, WIDE);
  t.equal(volumeHealth(trouble, [], NOW)[0]!.health, 'INCONSISTENT, APPLY PAUSED, resync 45%, BITMAP, DISCONNECTED, PS-MT DISCONNECTED, PS CACHE CRITICAL');
  t.equal(row(out, 'db').at(-1), 'INCONSISTENT: the replica on mt-1 is not a usable image until the resync ends; APPLY PAUSED: retention log full: apply paused; resync 45%: no tracking baseline; BITMAP: journal quota reached (1073741824 of 1073741824 bytes); DISCONNECTED: agent agent-1 to the process server: TM_ERR_CONNECTION: connect ECONNREFUSED; PS-MT DISCONNECTED: ps-1 to mt-1: TM_ERR_CONNECTION: gone; PS CACHE CRITICAL: cache 5.0% free', 'each state with its cause');
  t.equal(row(out, 'db')[1], 'blocktrace/reflink BITMAP');
  const warn = lines(out).slice(lines(out).indexOf('warnings:') + 1).map((l) => l.trim());
  t.same(warn, [
    'agent agent-1: not connected to the process server: TM_ERR_CONNECTION: connect ECONNREFUSED',
    'db: BITMAP MODE (journal quota reached (1073741824 of 1073741824 bytes); 12 blocks dirty)',
    'db: resync 45% sent 12.0 MiB eta 30 s (no tracking baseline)',
    'process server ps-1: not connected to mt-1: TM_ERR_CONNECTION: gone',
    'process server ps-1: cache critical: cache 5.0% free',
    'process server ps-1: backpressure: agents are held back until the cache drains',
    'db: INCONSISTENT (resync under way) on mt-1: the replica is not a usable image',
    'db: last apply error on mt-1: TM_ERR_IO: EIO',
    'db: APPLY PAUSED on mt-1: retention log full: apply paused',
  ]);
  t.match(out, /^agent agent-1: NOT CONNECTED to ps-1 for 20s, sent 40\.0 MiB in 42 differentials$/m);
  t.match(out, /cache 95 B of 100 B used \(5% free, critical, BACKPRESSURE\)/);
});

t.test('a held-back agent, a finishing resync, and a scan volume in bitmap mode', async (t) => {
  const out = formatStatus([agent({ tracker: 'scan', capture: 'none', mode: 'bitmap', modeReason: 'process server unreachable for 300 s', dirtyBlocks: null, consistentAfterResync: false, lastCrashPoint: null }, { backpressure: true, backpressureReason: 'cache 4.0% free', backpressureSince: NOW - 7000 })], NOW, WIDE);
  t.equal(row(out, 'db').at(-1), 'resync finishing: writes made during the resync are being sent (step II); BITMAP: process server unreachable for 300 s; BACKPRESSURE: cache 4.0% free');
  t.match(out, /^agent agent-1: connected to ps-1 \(BACKPRESSURE for 7s\)/m);
  t.match(out, /^ {2}agent agent-1: held back by ps-1: cache 4\.0% free$/m);
  t.match(out, /^ {2}db: BITMAP MODE \(process server unreachable for 300 s; changes found by scan\)$/m);
  t.match(out, /^ {2}db: resync: finishing \(step II\)$/m);
});

t.test('only the daemons asked about: other hops are "-", and a volume missing from a hop given is said', async (t) => {
  const alone = formatStatus([agent()], NOW, WIDE);
  t.same(row(alone, 'db'), ['db', 'blocktrace/reflink data', '1.0 MiB 12s', '-', '-', '-', '42/-/-/-', '-', '-', '-', '-', 'ok']);
  const a = agent();
  (a.volumes as unknown[]).push({ ...(a.volumes as Record<string, unknown>[])[0], id: 'logs' });
  t.equal(volumeHealth([a, ps(), mt()]).find((v) => v.volume === 'logs')!.health, 'not at ps, not at mt');
  t.equal(formatStatus([], NOW, WIDE), 'VOLUME  AGENT  JOURNAL  PS CACHE  RATIO  MT STAGING  SEQ jrnl/ps/mt/applied  LAG  CRASH POINT  APP POINT  RETAINED  HEALTH', 'no daemon answered: the header alone');
});

t.test('a drained volume is not ok: its health says it is unprotected', async (t) => {
  const drained = { seq: 7, atMs: NOW - 1000, consistency: 'CRASH', tags: [], drainedAt: NOW };
  const snaps = [agent({ drained }), ps(), mt()];
  t.same(volumeHealth(snaps).map((v) => [v.volume, v.ok]), [['db', false]]);
  t.match(volumeHealth(snaps)[0]!.health, /DRAINED/);
  t.match(formatStatus(snaps, NOW, WIDE), /DRAINED: final point #7 taken 0s ago; unprotected until `tidemark resume`/);
  t.same(volumeHealth([agent({ drained: null }), ps(), mt()]).map((v) => v.ok), [true], 'not drained: ok');
});

t.test('a refusal by the next hop is not ok, and says why and when it is tried again', async (t) => {
  const geometry = { code: 'TM_ERR_VOLUME_GEOMETRY', message: 'mt-1 reported TM_ERR_VOLUME_GEOMETRY: replica /srv/replica.img holds 8388608 bytes; the source has 16777216', seq: 0, count: 1, since: NOW - 3000, retryAt: NOW + 27_000 };
  const fwd = { 'mt-1': { connected: true, peer: 'mt-1', diffsSent: 0, bytesSent: 0, lastError: geometry.message, lastAckAt: 0, downSince: 0, backpressure: false, refusals: { db: geometry } } };
  const h = volumeHealth([agent(), ps({}, { forwarders: fwd }), mt()], [], NOW)[0]!;
  t.equal(h.ok, false);
  t.same(h.problems, [{ state: 'REFUSED by mt-1', cause: `${geometry.message}; next try in 27s` }]);
  // A master target out of disk refuses each differential; the third refusal in a row waits longer.
  const full = { code: 'TM_ERR_DISK_FULL', message: 'mt-1 reported TM_ERR_DISK_FULL: volume db seq 41: write staging: ENOSPC', seq: 41, count: 3, since: NOW - 20_000, retryAt: NOW + 8000 };
  const out = formatStatus([agent(), ps({}, { forwarders: { 'mt-1': { ...fwd['mt-1'], refusals: { db: full } } } }), mt()], NOW, WIDE);
  t.equal(row(out, 'db').at(-1), `REFUSED by mt-1: ${full.message}; next try in 8s, refused 3 times in a row`);
  const byAgent = volumeHealth([agent({}, { refusals: { db: { ...geometry, message: 'ps-1 reported TM_ERR_VOLUME_NOT_ASSIGNED: agent-1 may not send db' } } }), ps(), mt()], [], NOW)[0]!;
  t.same(byAgent.problems.map((p) => p.state), ['REFUSED by ps-1']);
});

t.test('a resync owed, and daemons that do not answer, are causes too', async (t) => {
  const owed = volumeHealth([agent(), ps({ resyncNeeded: 'the agent restarted from an older journal' }), mt()], [], NOW)[0]!;
  t.same(owed.problems, [{ state: 'RESYNC NEEDED', cause: 'ps-1: the agent restarted from an older journal' }]);
  const unreachable = [{ role: 'master-target' as const, name: 'mt-1', volumes: ['db', 'logs'], error: 'not running (no /srv/mt/status-port)' }];
  const h = volumeHealth([agent()], unreachable, NOW);
  t.same(h.map((v) => [v.volume, v.health]), [['db', 'MT UNREACHABLE'], ['logs', 'MT UNREACHABLE']], 'a volume only the unreachable daemon lists has a row too');
  const out = formatStatus([agent()], NOW, { width: Infinity, unreachable });
  t.match(out, /^master-target mt-1: NOT REACHABLE \(not running \(no \/srv\/mt\/status-port\)\)$/m);
  t.match(row(out, 'logs').at(-1)!, /^MT UNREACHABLE: master-target mt-1: not running/);
});

t.test('the table fits the width asked: columns left out, least useful first; HEALTH wraps, losing nothing', async (t) => {
  const snaps = [agent({ drained: { seq: 7, atMs: NOW - 1000, tags: [], drainedAt: NOW } }), ps(), mt()];
  for (const width of [160, 120, 100, 80, 72]) {
    const out = formatStatus(snaps, NOW, { width });
    const long = lines(out).filter((l) => l.length > width);
    t.same(long, [], `width ${width}: no line is longer`);
    const header = lines(out).find((l) => l.startsWith('VOLUME'))!;
    t.match(header, /^VOLUME .*HEALTH$/, `width ${width}: VOLUME and HEALTH kept`);
    t.match(out.replace(/\s+/g, ' '), /DRAINED: final point #7 taken 0s ago; unprotected until `tidemark resume`/, `width ${width}: the cause is all there`);
    t.match(out.replace(/\s+/g, ' '), /columns left out to fit the width: AGENT, .*RATIO/, `width ${width}: what is left out is said`);
  }
  const at80 = lines(formatStatus(snaps, NOW, { width: 80 })).find((l) => l.startsWith('VOLUME'))!.split(/ {2,}/);
  t.same(at80, ['VOLUME', 'LAG', 'CRASH POINT', 'HEALTH'], 'at 80 columns: the point, its lag and the health');
  t.notMatch(formatStatus(snaps, NOW, WIDE), /left out/, 'unbounded: every column');
});

t.test('the width: COLUMNS, else the terminal\'s, else unbounded', async (t) => {
  t.equal(terminalWidth({ COLUMNS: '90' }, { isTTY: true, columns: 200 }), 90);
  t.equal(terminalWidth({}, { isTTY: true, columns: 132 }), 132);
  t.equal(terminalWidth({ COLUMNS: 'x' }, { isTTY: false }), Infinity);
  t.equal(wrap('a bb ccc TM_ERR_VOLUME_GEOMETRY', 8), 'a bb ccc\nTM_ERR_V\nOLUME_GE\nOMETRY');
});
