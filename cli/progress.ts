// Progress of a long command (resync, verify, recover, failover), as rsync --info=progress2 and zfs send -v
// give it: bytes, rate and ETA, on stderr (stdout keeps the result). A bar redrawn in place on a terminal
// (cli-progress), a plain line every second otherwise, nothing at all with --json.
import { SingleBar } from 'cli-progress';
import { bytes } from './status.js';

export interface Meter {
  /** Bytes done of `total`; `note` is shown after the figures (a phase, what is sent...). */
  update(done: number, total: number, note?: string): void;
  /** A line of its own (the bar moves below it). */
  say(line: string): void;
  stop(): void;
}

const seconds = (s: number): string => (!Number.isFinite(s) || s < 0 ? '?' : s < 120 ? `${Math.round(s)}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${(s / 3600).toFixed(1)}h`);

/** "45.0% 12.0 MiB of 64.0 MiB, 3.1 MiB/s, ETA 17s": rate over the whole run, ETA from it. */
export function progressText(done: number, total: number, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0;
  const pct = total > 0 ? (100 * done) / total : 100;
  const eta = rate > 0 ? (total - done) / rate : Infinity;
  return `${pct.toFixed(1)}% ${bytes(done)} of ${bytes(total)}, ${bytes(Math.round(rate))}/s, ETA ${done >= total ? '0s' : seconds(eta)}`;
}

export function meter(label: string, o: { json: boolean; stream?: NodeJS.WriteStream }): Meter {
  if (o.json) return { update: () => {}, say: () => {}, stop: () => {} };
  const stream = o.stream ?? process.stderr;
  let started = Date.now();
  let note = '';
  let last = 0;
  const bar = new SingleBar({
    stream,
    // Off a terminal cli-progress writes one line per schedule tick instead of redrawing.
    noTTYOutput: true,
    notTTYSchedule: 1000,
    fps: 5,
    hideCursor: true,
    clearOnComplete: false,
    barsize: 24,
    format: (opts, params) => {
      const figures = progressText(params.value, params.total, Date.now() - started);
      const drawn = stream.isTTY ? `[${(opts.barCompleteString ?? '').slice(0, Math.round(params.progress * (opts.barsize ?? 24)))}${(opts.barIncompleteString ?? '').slice(0, (opts.barsize ?? 24) - Math.round(params.progress * (opts.barsize ?? 24)))}] ` : '';
      return `${label} ${drawn}${figures}${note ? ` ${note}` : ''}`;
    },
    barCompleteChar: '#',
    barIncompleteChar: '-',
  });
  let begun = false;
  return {
    update(done, total, n) {
      // A new phase (bytes start again from below): its rate and ETA are its own.
      if (done < last || (n !== undefined && n !== note && note !== '')) started = Date.now();
      last = done;
      note = n ?? note;
      if (!begun) {
        bar.start(Math.max(total, 1), done);
        begun = true;
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(done);
      }
    },
    say(line) {
      if (begun && stream.isTTY) stream.write('\r\x1b[2K');
      stream.write(`${line}\n`);
    },
    stop() {
      if (begun) bar.stop();
      begun = false;
    },
  };
}
