// Parser for block_rq_complete lines as an agent-owned tracefs instance prints them (context-info off):
//   block_rq_complete: 7,0 WS () 8000 + 8 be,0,4 [0]
// The kernel filter already keeps only our disk's non-read requests; anything that does not parse is
// reported, never skipped, because a skipped line could be a write we then never send.

export interface RqCallback {
  (sector: number, sectors: number): void;
}

const PREFIX = 'block_rq_complete: ';

/** The kernel's own note that a buffer overran: "CPU:1 [LOST 47952 EVENTS]". */
const LOST = /^CPU:\d+ \[LOST (\d+) EVENTS\]$/;

/**
 * Calls `onWrite` for every write, discard or other non-read request with sectors in `text` (whole lines),
 * and `onLost` for each note of lost events. Returns the number of event lines (notes are not events), or
 * throws with the first line it cannot account for.
 */
export function parseRqEvents(text: string, onWrite: RqCallback, onLost?: (events: number) => void): number {
  let lines = 0;
  let pos = 0;
  const n = text.length;
  while (pos < n) {
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = n;
    if (eol > pos) {
      if (text.charCodeAt(pos) === 67 /* C */ && text.startsWith('CPU:', pos)) {
        const m = LOST.exec(text.slice(pos, eol));
        if (!m) throw bad(text, pos, eol);
        onLost?.(Number(m[1]));
      } else {
        lines++;
        parseLine(text, pos, eol, onWrite);
      }
    }
    pos = eol + 1;
  }
  return lines;
}

function parseLine(s: string, start: number, end: number, onWrite: RqCallback): void {
  if (!s.startsWith(PREFIX, start)) throw bad(s, start, end);
  let i = s.indexOf(' ', start + PREFIX.length); // past "maj,min"
  if (i < 0 || i >= end) throw bad(s, start, end);
  const rwbs = i + 1;
  i = s.indexOf(' ', rwbs);
  if (i < 0 || i >= end) throw bad(s, start, end);
  const isRead = s.charCodeAt(rwbs) === 82; // 'R': the filter drops these; tolerate them anyway
  i = s.indexOf(') ', i); // past "(cmd)"
  if (i < 0 || i >= end) throw bad(s, start, end);
  i += 2;
  let sector = 0;
  let c = s.charCodeAt(i);
  if (c < 48 || c > 57) throw bad(s, start, end);
  while (c >= 48 && c <= 57) {
    sector = sector * 10 + (c - 48);
    c = s.charCodeAt(++i);
  }
  if (!s.startsWith(' + ', i)) throw bad(s, start, end);
  i += 3;
  let sectors = 0;
  c = s.charCodeAt(i);
  if (c < 48 || c > 57) throw bad(s, start, end);
  while (c >= 48 && c <= 57) {
    sectors = sectors * 10 + (c - 48);
    c = s.charCodeAt(++i);
  }
  if (!isRead && sectors > 0) onWrite(sector, sectors);
}

function bad(s: string, start: number, end: number): Error {
  return new Error(`unparseable trace line: ${s.slice(start, Math.min(end, start + 120))}`);
}
