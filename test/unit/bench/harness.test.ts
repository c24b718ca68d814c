// Benchmarks say what they measured: a figure never observed is written as null with a note (never
// replaced by another figure), and the notes are listed under the printed table.
import t from 'tap';
import { missingFigures, resultFigure } from '../../../bench/harness.js';

t.test('a number never observed is null with a note; measured numbers are rounded, checks kept', async (t) => {
  t.strictSame(resultFigure({ name: 'first pass', value: NaN, unit: 's' }), { name: 'first pass', value: null, unit: 's', note: 'not observed in this run' });
  t.strictSame(resultFigure({ name: 'x', value: Infinity, unit: 'MiB/s', note: 'not observed: no poll saw it' }).note, 'not observed: no poll saw it', 'a note given by the benchmark is kept');
  t.strictSame(resultFigure({ name: 'x', value: null, unit: 's' }).note, 'not observed in this run', 'null without a note gets one');
  t.equal(resultFigure({ name: 'x', value: 1 / 3, unit: 's' }).value, 0.333333);
  t.equal(resultFigure({ name: 'equal', value: true, unit: 'bool' }).value, true);
  t.equal(resultFigure({ name: 'zero', value: 0, unit: 's' }).value, 0, 'zero is a measurement, not a missing one');
});

t.test('missing figures are listed by name with why, references included', async (t) => {
  const lines = missingFigures({
    figures: [{ name: 'converged', value: 10.1, unit: 's' }, { name: 'first pass', value: NaN, unit: 's', note: 'not observed: no poll saw it' }],
    references: [{ name: 'rsync', description: '', figures: [{ name: 'wall time', value: null, unit: 's' }] }],
  });
  t.strictSame(lines, ['first pass: not observed: no poll saw it', 'rsync: wall time: not observed in this run']);
});
