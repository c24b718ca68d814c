// What a daemon logged after a fault: the checker's evidence that a fault was noticed (an alert, a resync).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { DaemonName, Lab } from '../../lab/lab.js';

export const logSize = (lab: Lab, d: DaemonName): Promise<number> => fsp.stat(path.join(lab.opts.dir, `${d}.log`)).then((s) => s.size, () => 0);

/** Log lines a daemon wrote after `offset` bytes. */
export async function logAfter(lab: Lab, d: DaemonName, offset: number): Promise<Record<string, unknown>[]> {
  const text = (await fsp.readFile(path.join(lab.opts.dir, `${d}.log`)).catch(() => Buffer.alloc(0))).subarray(offset).toString('utf8');
  return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** True when `d` logged, after `offset`, a warning or error whose message or code matches `match`. */
export async function logged(lab: Lab, d: DaemonName, offset: number, match: string): Promise<boolean> {
  const re = new RegExp(match, 'i');
  return (await logAfter(lab, d, offset)).some((l) => Number(l.level) >= 40 && re.test(`${String(l.msg)} ${String(l.code ?? '')}`));
}
