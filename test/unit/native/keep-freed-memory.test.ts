// keepFreedMemory (native/src/malloc-tune.c): freed buffers of a differential's size stay mapped, so the
// next ones do not fault their pages in again. Measured in child processes (the setting is process-wide):
// rounds of 64 buffers of 1 MiB, filled, dropped and collected; minor faults per round after the first.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';

const nativeIndex = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'index.js')).href;

function faultsPerRound(keep: boolean): number {
  const code = `
    import { readFileSync } from 'node:fs';
    const { keepFreedMemory } = await import(${JSON.stringify(nativeIndex)});
    if (${keep} && keepFreedMemory(128 * 1024 * 1024) !== 'set') throw new Error('not applied');
    const minflt = () => { const s = readFileSync('/proc/self/stat', 'utf8'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[7]); };
    let f0 = 0;
    for (let round = 0; round < 6; round++) {
      if (round === 1) f0 = minflt();
      let held = [];
      for (let i = 0; i < 64; i++) { const b = Buffer.allocUnsafeSlow(1 << 20); b.fill(i); held.push(b); }
      held = null;
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log((minflt() - f0) / 5);`;
  return Number(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', code], { encoding: 'utf8' }).trim());
}

t.test('freed 1 MiB buffers are reused, not faulted in again', { skip: process.platform !== 'linux' && 'glibc only' }, async (t) => {
  const kept = faultsPerRound(true);
  const pages = (64 << 20) / 4096;
  t.comment(`faults per round of ${pages} pages: ${kept} kept, ${faultsPerRound(false)} with glibc's own policy`);
  t.ok(kept < pages / 16, `${kept} faults per round (a round writes ${pages} pages)`);
});
