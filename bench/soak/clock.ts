// The source's clock, stepped under the agent with libfaketime (Debian package faketime): the agent runs
// with the library preloaded and reads its offset from a file we rewrite, so the step happens while it
// runs, as an NTP step or a VM resumed from a snapshot would. Monotonic clocks (timers) are left alone.
import { existsSync, promises as fsp } from 'node:fs';

const LIBS = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1', '/usr/lib/faketime/libfaketimeMT.so.1'];

export function faketimeLib(): string | null {
  return LIBS.find((l) => existsSync(l)) ?? null;
}

export class SourceClock {
  offsetS = 0;

  constructor(private readonly file: string) {}

  /** Environment for the agent: preload libfaketime, offset from our file, re-read every second. */
  async env(): Promise<NodeJS.ProcessEnv> {
    const lib = faketimeLib();
    if (!lib) throw new Error('the clock fault needs libfaketime (Debian package faketime)');
    await this.step(this.offsetS);
    return { LD_PRELOAD: lib, FAKETIME_TIMESTAMP_FILE: this.file, FAKETIME_CACHE_DURATION: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' };
  }

  /** Set the agent's clock to real time + `offsetS` seconds. */
  async step(offsetS: number): Promise<void> {
    this.offsetS = offsetS;
    await fsp.writeFile(this.file, `${offsetS >= 0 ? '+' : ''}${offsetS}s\n`);
  }
}
