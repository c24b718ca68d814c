// docs/ERRORS.md and the ERRORS table stay in step; wrap() and codeOf() behave as documented.

import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERRORS, TidemarkError, asTidemarkError, codeOf, isCorruption, isTidemarkError, tmError, wrap } from '../../../common/errors.js';

/** The repository root: the nearest folder above this file holding package.json and docs/. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'docs'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no folder with package.json and docs/ above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

const errorsMd = fs.readFileSync(path.join(repoRoot(), 'docs', 'ERRORS.md'), 'utf8');

/** Level-2 sections whose heading is a TM_ERR_* code: code -> body text up to the next level-1/2 heading. */
function sections(md: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = md.split('\n');
  let current: string | null = null;
  let body: string[] = [];
  const flush = (): void => {
    if (current !== null) out.set(current, body.join('\n'));
  };
  for (const line of lines) {
    if (/^#{1,2} /.test(line)) {
      flush();
      const m = /^## (TM_ERR_\S+)\s*$/.exec(line);
      current = m ? m[1]! : null;
      body = [];
    } else if (current !== null) {
      body.push(line);
    }
  }
  flush();
  return out;
}

const docs = sections(errorsMd);
const codes = Object.keys(ERRORS);

t.test('every error code has exactly one section in docs/ERRORS.md, and nothing else does', async (t) => {
  const headings = [...errorsMd.matchAll(/^## (TM_ERR_\S*)\s*$/gm)].map((m) => m[1]!);
  t.same([...new Set(headings)].sort(), [...codes].sort(), 'set of ## TM_ERR_* headings equals Object.keys(ERRORS)');
  t.equal(headings.length, new Set(headings).size, 'no code is documented twice');
  t.same(headings, codes, 'sections are in the order of the ERRORS table');
});

t.test('each section is non-empty and says what to do', async (t) => {
  for (const code of codes) {
    const body = docs.get(code);
    if (body === undefined) {
      t.fail(`${code}: no section`);
      continue;
    }
    t.ok(body.trim().length > 0, `${code}: section is not empty`);
    const todo = /\*\*What to do:\*\*\s*(\S.*)/.exec(body);
    t.ok(todo, `${code}: has a "What to do:" paragraph`);
    t.ok((todo?.[1]?.trim().length ?? 0) > 10, `${code}: "What to do:" says something`);
    t.match(body, new RegExp(`\\*\\*Class:\\*\\* ${ERRORS[code as keyof typeof ERRORS].class}\\.`), `${code}: documents its class`);
  }
});

t.test('wrap keeps the original code and prefixes the message', async (t) => {
  const inner = tmError('TM_ERR_HRL_CORRUPT', 'file checksum mismatch', { path: '/x/0000000000000042.hrl' });
  const outer = wrap(inner, 'read journal file 0000000000000042.hrl', { volume: 'vol1' });
  t.type(outer, TidemarkError);
  t.equal(outer.code, 'TM_ERR_HRL_CORRUPT');
  t.equal(outer.message, 'read journal file 0000000000000042.hrl: file checksum mismatch');
  t.same(outer.context, { path: '/x/0000000000000042.hrl', volume: 'vol1' }, 'contexts are merged');
  t.equal(outer.cause, inner, 'the original error is the cause');

  const os = Object.assign(new Error('ECONNRESET: socket hang up'), { code: 'ECONNRESET' });
  const w = wrap(os, 'connect to process-server at 10.0.0.1:7410');
  t.equal(w.code, 'TM_ERR_CONNECTION', 'an OS error gets the nearest code');
  t.equal(w.message, 'connect to process-server at 10.0.0.1:7410: ECONNRESET: socket hang up');

  t.equal(wrap('plain string', 'doing x').message, 'doing x: plain string');
});

t.test('codeOf maps errno errors to codes', async (t) => {
  const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: failed`), { code });
  t.equal(codeOf(errno('ENOSPC')), 'TM_ERR_DISK_FULL');
  t.equal(codeOf(errno('EDQUOT')), 'TM_ERR_DISK_FULL');
  t.equal(codeOf(errno('ECONNREFUSED')), 'TM_ERR_CONNECTION');
  t.equal(codeOf(errno('EIO')), 'TM_ERR_IO');
  t.equal(codeOf(new Error('no code')), 'TM_ERR_IO');
  t.equal(codeOf(undefined), 'TM_ERR_IO');
  t.equal(codeOf(tmError('TM_ERR_SEQUENCE_GAP', 'x')), 'TM_ERR_SEQUENCE_GAP');
  t.equal(wrap(errno('ENOSPC'), 'write 0000000000000007.hrl').code, 'TM_ERR_DISK_FULL');
});

t.test('asTidemarkError keeps a Tidemark error and gives anything else the nearest code', async (t) => {
  const own = tmError('TM_ERR_HRL_CORRUPT', 'bad crc');
  t.equal(asTidemarkError(own), own, 'the same object, not a copy');
  const disk = asTidemarkError(Object.assign(new Error('write: no space'), { code: 'ENOSPC' }));
  t.equal(disk.code, 'TM_ERR_DISK_FULL', 'an errno maps to its code');
  t.equal(disk.message, 'write: no space', 'keeping the message');
  t.equal(asTidemarkError('plain string').code, 'TM_ERR_IO', 'a thrown non-error is TM_ERR_IO');
  t.equal(asTidemarkError(undefined).message, 'undefined');
  t.ok(isTidemarkError(own));
  t.notOk(isTidemarkError(new Error('x')));
  t.notOk(isTidemarkError({ code: 'TM_ERR_IO', message: 'looks like one' }), 'a look-alike object is not one');
});

t.test('isCorruption is true only for the corruption class', async (t) => {
  t.ok(isCorruption(tmError('TM_ERR_HRL_CORRUPT', 'x')), 'a checksum failure is corruption');
  t.notOk(isCorruption(tmError('TM_ERR_DISK_FULL', 'x')), 'a full disk is not');
  t.notOk(isCorruption(Object.assign(new Error('x'), { code: 'EIO' })), 'nor an OS error');
});
