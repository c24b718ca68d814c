// App-consistent points and their pacing do not wait out a wall clock stepped back (an NTP step, a VM
// resumed from a snapshot): the tag cadence and the minimum gap between freezes and stream cuts run on the
// monotonic clock. A child process runs a real ScriptCapture on an image file under libfaketime (Debian
// package faketime, as the soak uses), its clock +240 s, then stepped back to real time: the next point
// due by the interval must carry its tag, and the gap must be open. On the wall clock both waited 240 s.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { faketimeLib, SourceClock } from '../../../../bench/soak/clock.js';

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

const CHILD = `
import { ScriptCapture } from '${DIST}/agent/capture/script.js';
import { MinGap } from '${DIST}/agent/cadence.js';
import { Volume } from '${DIST}/agent/volume.js';
import { rootLogger } from '${DIST}/common/log.js';
import { writeFileSync } from 'node:fs';
import readline from 'node:readline';
const image = process.argv[1];
writeFileSync(image, Buffer.alloc(1 << 20));
const volume = await Volume.open(image);
const capture = new ScriptCapture('v', volume, { pre: 'true', timeoutMs: 5000, tag: 'hourly', tagIntervalMs: 1000 }, rootLogger('test', 'silent'));
const gap = new MinGap(1000);
const point = async () => { const v = await capture.begin(); await v.settle?.(); await v.release(); return v.tags; };
const first = await point();
gap.mark();
const before = Date.now();
console.log(JSON.stringify({ first, gapAtOnce: gap.ready() }));
const lines = readline.createInterface({ input: process.stdin });
for await (const _ of lines) break;
// libfaketime re-reads its offset every second; then the interval (1 s) has passed on any clock but the wall's.
await new Promise((r) => setTimeout(r, 2500));
console.log(JSON.stringify({ wallWentBack: Date.now() < before - 200_000, second: await point(), gapOpen: gap.ready() }));
await volume.close();
process.exit(0);
`;

t.test('a wall clock stepped back does not hold the next tagged point or the next freeze', async (t) => {
  if (!faketimeLib()) return t.fail("needs libfaketime: install Debian's faketime package (.ci/run does)");
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tm-clock-step-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const clock = new SourceClock(path.join(dir, 'clock'));
  await clock.step(240);
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, path.join(dir, 'v.img')], { env: { ...process.env, ...(await clock.env()) }, stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Record<string, unknown>[] = [];
  let buf = '';
  const second = new Promise<void>((resolve, reject) => {
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}`))));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        out.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
        if (out.length === 1) void clock.step(0).then(() => child.stdin.write('stepped\n'));
      }
    });
  });
  await second;
  t.same(out[0], { first: ['hourly'], gapAtOnce: false }, 'the first point is tagged, and the gap closes behind it');
  t.equal(out[1]?.wallWentBack, true, 'the child saw its wall clock go back 240 s');
  t.same(out[1]?.second, ['hourly'], 'the point after the interval is tagged though the wall clock says it is 237 s earlier');
  t.equal(out[1]?.gapOpen, true, 'and the minimum gap is open');
});
