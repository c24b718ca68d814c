// `tidemark points` filters and the time flags: which points are listed, and bad values refused as
// usage errors before any daemon is asked.
import t from 'tap';
import { filterPoints, pointFilter } from '../../../cli/point-filter.js';
import { parseTime } from '../../../cli/recover.js';
import { codeOf } from '../../../common/errors.js';

const NOW = 1_800_000_000_000;
const P = (seq: number, agoMin: number, consistency = 'CRASH'): { seq: number; atMs: number; consistency: string } => ({ seq, atMs: NOW - agoMin * 60_000, consistency });
const POINTS = [P(1, 120), P(2, 90, 'APP'), P(3, 60), P(4, 30, 'APP'), P(5, 10), P(6, 1)];
const parse = (text: string, flag: string): number => parseTime(text, NOW, flag);
const seqs = (f: Parameters<typeof pointFilter>[0]): number[] => filterPoints(POINTS, pointFilter(f, parse)).map((p) => p.seq);

t.test('since, until, class and limit select the points', async (t) => {
  t.same(seqs({}), [1, 2, 3, 4, 5, 6], 'no filter: all');
  t.same(seqs({ since: '1h ago' }), [3, 4, 5, 6], '--since an age');
  t.same(seqs({ until: new Date(NOW - 30 * 60_000).toISOString() }), [1, 2, 3, 4], '--until an ISO time (inclusive)');
  t.same(seqs({ since: '100m ago', until: '20m ago' }), [2, 3, 4], 'a window');
  t.same(seqs({ class: 'app' }), [2, 4], '--class app');
  t.same(seqs({ class: 'CRASH', limit: '2' }), [5, 6], '--limit keeps the newest, after the other filters');
  t.same(seqs({ until: String(NOW + 3_600_000) }), [1, 2, 3, 4, 5, 6], 'a future --until is fine');
});

t.test('bad values are usage errors', async (t) => {
  for (const [f, msg] of [
    [{ class: 'fuzzy' }, /--class must be crash or app, not "fuzzy"/],
    [{ limit: '0' }, /--limit must be a whole number of points, 1 or more/],
    [{ limit: '-3' }, /--limit must be/],
    [{ since: 'yesterday-ish' }, /--since "yesterday-ish" is not a time/],
    [{ since: '10m ago', until: '1h ago' }, /--since .* is after --until/],
  ] as const) {
    let err: unknown = null;
    try {
      pointFilter(f, parse);
    } catch (e) {
      err = e;
    }
    t.equal(codeOf(err), 'TM_ERR_USAGE', `${JSON.stringify(f)}: TM_ERR_USAGE`);
    t.match((err as Error).message, msg);
  }
});

t.test('a future --at is refused, not read as the latest point', async (t) => {
  t.throws(() => parseTime('2030-01-01T00:00:00Z', NOW), { code: 'TM_ERR_USAGE', message: /--at 2030-01-01T00:00:00\.000Z is in the future .* use --latest/ });
  t.equal(parseTime('15m ago', NOW), NOW - 15 * 60_000, 'an age is in the past');
  t.equal(parseTime(String(NOW), NOW), NOW, 'now itself is fine');
});
