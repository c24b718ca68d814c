// A daemon or the CLI starting loads only what every start needs: the certificate library (issuing,
// revoking, reading a CRL) and the S3 client (a volume with a bucket tier) cost 0.24 s of CPU each to load.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-startup-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

// Preloaded with --import: prints every ES module loaded (by URL) and every CommonJS file resolved.
const esmHook = path.join(dir, 'esm-hook.mjs');
fs.writeFileSync(esmHook, 'export async function load(url, context, next) {\n  process.stderr.write(`LOADED ${url}\\n`);\n  return next(url, context);\n}\n');
const preload = path.join(dir, 'preload.mjs');
fs.writeFileSync(preload, [
  "import Module, { register } from 'node:module';",
  "import { pathToFileURL } from 'node:url';",
  `register(pathToFileURL(${JSON.stringify(esmHook)}));`,
  'const resolve = Module._resolveFilename;',
  'Module._resolveFilename = function (...args) {',
  '  const file = resolve.apply(this, args);',
  '  process.stderr.write(`LOADED ${file}\\n`);',
  '  return file;',
  '};',
  '',
].join('\n'));

/** Every module a fresh Node loads to run `args` (exit status 0 expected). */
function modulesLoadedBy(args: string[]): string[] {
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(preload).href, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr.slice(-2000)}`);
  return r.stderr.split('\n').filter((l) => l.startsWith('LOADED ')).map((l) => l.slice(7));
}

const runs: Array<[string, string[]]> = [
  ...['agent/agent.js', 'process-server/server.js', 'master-target/server.js'].map((m): [string, string[]] => [m, ['--input-type=module', '-e', `await import(${JSON.stringify(path.join(dist, m))});`]]),
  ['cli/tidemark.js', [path.join(dist, 'cli/tidemark.js'), '--help']],
];

for (const [entry, args] of runs) {
  t.test(`${entry} loads neither the certificate library nor the S3 client to start (with no CRL)`, async (t) => {
    const loaded = modulesLoadedBy(args);
    t.ok(loaded.some((m) => m.endsWith(entry)), `the hook saw the entry itself (${loaded.length} modules)`);
    t.ok(loaded.some((m) => m.includes('node_modules/pino/lib/')), 'and the CommonJS files it requires');
    t.same(loaded.filter((m) => /@peculiar|tsyringe|@aws-sdk|@smithy/.test(m)), [], 'loaded on first use only');
  });
}
