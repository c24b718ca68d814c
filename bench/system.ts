// Shared by the benchmarks that build their own filesystems and loop devices: finding system tools and
// cleaning up only what a benchmark made under its own folder.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

export function bin(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin']) {
    const p = path.join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  return null;
}

export function sh(name: string, ...args: string[]): string {
  return execFileSync(bin(name) ?? name, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

export function version(cmd: string, arg: string): string {
  try {
    return /\d+\.\d+(\.\d+)?/.exec(execFileSync(bin(cmd) ?? cmd, [arg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))?.[0] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export function quietly(what: string, fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    console.log(`  cleanup: ${what}: ${((e as Error).message ?? String(e)).split('\n')[0]}`);
  }
}

/** Mount points at or under `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const mp = line.split(' ')[1]?.replace(/\\040/g, ' ');
    if (mp && (mp === dir || mp.startsWith(dir + '/'))) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Loop devices whose backing file is at or under `dir`. */
export function loopsUnder(dir: string): string[] {
  const out: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync('/sys/block').filter((n) => /^loop\d+$/.test(n));
  } catch {
    return out;
  }
  for (const n of names) {
    try {
      const backing = readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim().replace(/ \(deleted\)$/, '');
      if (backing === dir || backing.startsWith(dir + '/')) out.push(`/dev/${n}`);
    } catch {
      // not attached
    }
  }
  return out;
}

/** Unmount everything under `dir` and detach the loop devices over images in it, inner ones first (never other ones). */
export function unmountAndDetach(dir: string): void {
  // A loop device over an image on a mount under `dir` must go before that mount can be unmounted.
  for (let pass = 0; pass < 2; pass++) {
    for (const mp of mountsUnder(dir)) {
      for (const dev of loopsUnder(mp)) quietly(`losetup -d ${dev}`, () => sh('losetup', '-d', dev));
    }
    for (const mp of mountsUnder(dir)) {
      try {
        sh('umount', mp);
      } catch {
        quietly(`umount -l ${mp}`, () => sh('umount', '-l', mp));
      }
    }
    for (const dev of loopsUnder(dir)) quietly(`losetup -d ${dev}`, () => sh('losetup', '-d', dev));
  }
}
