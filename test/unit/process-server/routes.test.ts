import t from 'tap';
import { Routes } from '../../../process-server/routes.js';

t.test('each volume goes to its configured master target, and each master target gets its volumes in order', async (t) => {
  const r = new Routes([
    { id: 'a', agent: 'x', masterTarget: 'mt1' },
    { id: 'b', agent: 'x', masterTarget: 'mt2' },
    { id: 'c', agent: 'y', masterTarget: 'mt1' },
  ] as never);
  t.equal(r.masterTargetOf('b'), 'mt2');
  t.equal(r.masterTargetOf('nope'), null, 'a volume not configured here has no route');
  t.same(r.volumesOf('mt1'), ['a', 'c']);
  t.same(r.volumesOf('mt3'), [], 'a master target with no volumes gets none');
});
