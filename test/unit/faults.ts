// Fault injection for unit tests: a real collaborator with one method replaced, so a crash or an error
// lands exactly between two steps of the code under test while everything else is the real thing.

/** An error a test injected: tells the injected failure apart from a real one. */
export class Crash extends Error {}

/** `real` with some methods replaced; every other property and method is the real object's. */
export function withFaults<T extends object>(real: T, over: Partial<T> | undefined): T {
  if (!over) return real;
  return new Proxy(real, {
    get(o, k) {
      if (k in over) return (over as Record<PropertyKey, unknown>)[k];
      const v = Reflect.get(o, k) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(o) : v;
    },
  });
}

/** Fails the `n`th call (counting from 1) of a method with `err` (a Crash by default), delegating the others. */
export function failOn<A extends unknown[], R>(real: (...a: A) => Promise<R>, n: number | ((call: number) => boolean), err?: () => Error): (...a: A) => Promise<R> {
  let calls = 0;
  const hit = typeof n === 'number' ? (c: number) => c === n : n;
  return (...a: A) => (hit(++calls) ? Promise.reject(err ? err() : new Crash(`crash at call ${calls}`)) : real(...a));
}

/** An errno error as node:fs raises it (ENOSPC, EIO...). */
export function errnoError(code: string, syscall = 'write'): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall });
}
