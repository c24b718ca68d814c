// Group points on the master target: only a cut whose tag reached every member it names is a group point.
import t from 'tap';
import type { RecoveryPoint } from '../../../master-target/volume-state.js';
import { groupNames, groupPoints, selectGroupPoint } from '../../../master-target/group-recovery.js';

const p = (seq: number, tags: string[]): RecoveryPoint => ({ seq, atMs: seq * 1000, consistency: 'CRASH', tags, appliedAt: 0 });

t.test('complete cuts only, oldest first, members by volume', async (t) => {
  const all = new Map<string, RecoveryPoint[]>([
    ['data', [p(3, ['cg:db:1000:2']), p(5, ['cg:db:2000:2']), p(9, ['cg:db:3000:2']), p(10, ['cg:web:3000:1'])]],
    ['log', [p(4, ['cg:db:1000:2']), p(8, ['cg:db:3000:2'])]], // the 2000 cut did not reach the log volume
    ['other', [p(1, [])]],
  ]);
  const db = groupPoints(all, 'db');
  t.same(db.map((g) => g.tag), ['cg:db:1000:2', 'cg:db:3000:2'], 'the incomplete cut is not a group point');
  t.same(db[1]!.members, [{ volume: 'data', seq: 9 }, { volume: 'log', seq: 8 }], 'each member at its own seq of that cut');
  t.same(groupNames(all), ['db', 'web']);
  t.equal(selectGroupPoint(db, { latest: true }, 'db', ['db']).tag, 'cg:db:3000:2');
  t.equal(selectGroupPoint(db, { atMs: 2500 }, 'db', ['db']).tag, 'cg:db:1000:2', '--at picks the newest cut at or before');
  t.throws(() => selectGroupPoint(db, { atMs: 500 }, 'db', ['db']), { code: 'TM_ERR_POINT_NOT_FOUND' });
  t.throws(() => selectGroupPoint(groupPoints(all, 'dv'), { latest: true }, 'dv', ['db', 'web']), { code: 'TM_ERR_POINT_NOT_FOUND', message: /did you mean "db"/ });
  t.throws(() => selectGroupPoint(db, { latest: true, atMs: 1 }, 'db', ['db']), { code: 'TM_ERR_USAGE' });
});
