// block_rq_complete lines as an agent-owned tracefs instance prints them: every non-read request with
// sectors reaches the callback, reads and empty requests do not, and a line that cannot be read stops the
// parse (a skipped line could be a write never sent).
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { parseRqEvents } from '../../../agent/trackers/rq-events.js';
import { seedFastCheck } from '../../seed.js';

seedFastCheck();

/** Parse `text`; the calls as [sector, sectors] and the line count. */
function parse(text: string): { calls: Array<[number, number]>; lines: number } {
  const calls: Array<[number, number]> = [];
  const lines = parseRqEvents(text, (sector, sectors) => calls.push([sector, sectors]));
  return { calls, lines };
}

t.test('writes, discards and flush+write requests are reported with their sectors', async (t) => {
  t.strictSame(parse('block_rq_complete: 7,0 WS () 8000 + 8 be,0,4 [0]\n'), { calls: [[8000, 8]], lines: 1 }, 'sync write, with ioprio (6.x)');
  t.strictSame(parse('block_rq_complete: 8,16 W () 123456789 + 256 [0]\n'), { calls: [[123456789, 256]], lines: 1 }, 'write, older format without ioprio');
  t.strictSame(parse('block_rq_complete: 259,0 D () 4096 + 2048 none,0,0 [0]\n'), { calls: [[4096, 2048]], lines: 1 }, 'discard');
  t.strictSame(parse('block_rq_complete: 8,0 DE () 64 + 64 [0]\n'), { calls: [[64, 64]], lines: 1 }, 'secure erase');
  t.strictSame(parse('block_rq_complete: 8,0 FWFS () 100 + 8 be,0,4 [0]\n'), { calls: [[100, 8]], lines: 1 }, 'preflush + write + FUA');
  t.strictSame(parse('block_rq_complete: 8,0 WM () 2 + 2 [-5]\n'), { calls: [[2, 2]], lines: 1 }, 'metadata write that failed (error -5): still reported');
  t.strictSame(parse('block_rq_complete: 8,0 WS () 0 + 8 [0]'), { calls: [[0, 8]], lines: 1 }, 'sector 0, no trailing newline');
});

t.test('reads and zero-sector requests are counted but not reported', async (t) => {
  const text = [
    'block_rq_complete: 8,0 R () 500 + 8 [0]',
    'block_rq_complete: 8,0 RA () 600 + 256 be,0,4 [0]',
    'block_rq_complete: 8,0 RM () 700 + 8 [0]',
    'block_rq_complete: 8,0 FF () 0 + 0 [0]', // a flush: no sectors
    'block_rq_complete: 8,0 WS () 900 + 0 [0]',
    'block_rq_complete: 8,0 WS () 1000 + 8 [0]',
    '',
  ].join('\n');
  t.strictSame(parse(text), { calls: [[1000, 8]], lines: 6 });
});

t.test('line counting: empty text, empty lines, order kept', async (t) => {
  t.strictSame(parse(''), { calls: [], lines: 0 }, 'nothing');
  t.strictSame(parse('\n\n'), { calls: [], lines: 0 }, 'empty lines are not events');
  const text = 'block_rq_complete: 8,0 W () 30 + 1 [0]\n\nblock_rq_complete: 8,0 W () 10 + 2 [0]\nblock_rq_complete: 8,0 D () 20 + 3 [0]\n';
  t.strictSame(parse(text), { calls: [[30, 1], [10, 2], [20, 3]], lines: 3 }, 'in the order of the text');
});

t.test('an unparseable line throws, naming it', async (t) => {
  const bad = [
    'garbage',
    'block_rq_complete',
    'block_rq_complete: 8,0',
    'block_rq_complete: 8,0 WS',
    'block_rq_complete: 8,0 WS (',
    'block_rq_complete: 8,0 WS () x + 8 [0]',
    'block_rq_complete: 8,0 WS () 8 - 8 [0]',
    'block_rq_complete: 8,0 WS () 8 + x [0]',
    'block_rq_complete: 8,0 WS () 8 +',
    'block_rq_complete: 8,0 WS ()  8 + 8 [0]',
    'block_rq_issue: 8,0 WS 4096 () 8 + 8 [fio]',
    ' block_rq_complete: 8,0 WS () 8 + 8 [0]',
    'CPU:0 [LOST x EVENTS]',
    'CPU:0 something else',
  ];
  for (const line of bad) {
    t.throws(() => parse(line), { message: /line: / }, JSON.stringify(line));
    t.throws(() => parse(`${line}\n`), { message: /line: / }, `${JSON.stringify(line)} + newline`);
  }
  t.throws(() => parse('block_rq_complete: 8,0 WS () 8 + 8 [0]\nnot an event\n'), { message: /not an event/ }, 'the message quotes the bad line');
});

t.test("the kernel's lost-events note is reported as a loss, not counted as an event", async (t) => {
  const lost: number[] = [];
  const calls: Array<[number, number]> = [];
  const n = parseRqEvents('block_rq_complete: 8,0 W () 1 + 1 [0]\nCPU:1 [LOST 47952 EVENTS]\nblock_rq_complete: 8,0 W () 9 + 1 [0]\n', (s, k) => calls.push([s, k]), (e) => lost.push(e));
  t.equal(n, 2, 'two events');
  t.strictSame(lost, [47952], 'the loss, with its count');
  t.strictSame(calls, [[1, 1], [9, 1]], 'events on both sides still reported');
});

t.test('a bad line after good ones: the good ones were reported before the throw', async (t) => {
  const calls: Array<[number, number]> = [];
  t.throws(() => parseRqEvents('block_rq_complete: 8,0 W () 1 + 1 [0]\n\u0000\u0001\u0002\n', (s, n) => calls.push([s, n])));
  t.strictSame(calls, [[1, 1]]);
});

t.test('a line cut short where digits end is not read into the next line', async (t) => {
  t.throws(() => parse('block_rq_complete: 8,0 W () 12\n34 + 8 [0]\n'));
  t.throws(() => parse('block_rq_complete: 8,0 W () 12 + \n8 [0]\n'));
});

// Generated lines: what the kernel could print for a non-read or read request.
const writeRwbs = fc.constantFrom('W', 'WS', 'WFS', 'WM', 'WSM', 'FWS', 'FWFS', 'D', 'DE', 'N');
const readRwbs = fc.constantFrom('R', 'RA', 'RS', 'RM', 'RSM');
const event = fc.record({
  major: fc.integer({ min: 0, max: 4095 }),
  minor: fc.integer({ min: 0, max: 1048575 }),
  read: fc.boolean(),
  wr: writeRwbs,
  rd: readRwbs,
  sector: fc.integer({ min: 0, max: 2 ** 48 }),
  sectors: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 1 << 22 })),
  ioprio: fc.option(fc.constantFrom('be,0,4', 'none,0,0', 'rt,0,0', 'idle,0,7'), { nil: undefined }),
  error: fc.constantFrom(0, -5, -11, -28),
});

t.test('property: generated lines round-trip sector and sector count', async (t) => {
  t.doesNotThrow(() => fc.assert(
    fc.property(fc.array(event, { maxLength: 40 }), fc.boolean(), (events, trailingNewline) => {
      const lines = events.map((e) => `block_rq_complete: ${e.major},${e.minor} ${e.read ? e.rd : e.wr} () ${e.sector} + ${e.sectors}${e.ioprio ? ` ${e.ioprio}` : ''} [${e.error}]`);
      const text = lines.join('\n') + (trailingNewline && lines.length > 0 ? '\n' : '');
      const want = events.filter((e) => !e.read && e.sectors > 0).map((e): [number, number] => [e.sector, e.sectors]);
      const got = parse(text);
      assert.equal(got.lines, events.length, 'one counted line per event');
      assert.deepStrictEqual(got.calls, want, 'exactly the non-read, non-empty requests, in order');
    }),
    { numRuns: 500 },
  ));
});
