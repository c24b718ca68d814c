// Which error codes documented in docs/ERRORS.md some test expects: `node dist/test/error-codes.js`
// prints one line per code with the test files that match it, and exits 1 when a code has none.
// "Matches" means the code appears in test code as a string or pattern (an expected value), not only
// in a comment; a code mentioned only in comments or only by message text is listed as untested.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const src = fs.existsSync(path.join(root, 'docs')) ? root : path.resolve(root, '..');

function testFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return testFiles(p);
    return e.name.endsWith('.ts') && p !== fileURLToPath(import.meta.url).replace(/\.js$/, '.ts') ? [p] : [];
  });
}

/** The file's text without // and /* comments (a rough cut: good enough for TypeScript test files). */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

const documented = [...fs.readFileSync(path.join(src, 'docs', 'ERRORS.md'), 'utf8').matchAll(/^## (TM_ERR_\w+)\s*$/gm)].map((m) => m[1]!);
const files = testFiles(path.join(src, 'test')).filter((f) => !f.endsWith(path.join('test', 'error-codes.ts')));
const bodies = new Map(files.map((f) => [path.relative(src, f), code(fs.readFileSync(f, 'utf8'))]));

let missing = 0;
for (const c of documented) {
  const expect = new RegExp(`['"\`/]${c}(?![A-Z0-9_])`);
  const hits = [...bodies].filter(([, body]) => expect.test(body)).map(([f]) => f);
  if (hits.length === 0) missing++;
  console.log(`${hits.length ? 'tested  ' : 'UNTESTED'} ${c.padEnd(30)} ${hits.join(' ')}`);
}
console.log(`${documented.length - missing} of ${documented.length} documented codes are expected by some test`);
process.exitCode = missing ? 1 : 0;
