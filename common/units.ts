// Byte counts as people read them in logs and findings.

/** `n` bytes in MiB with one decimal, e.g. `12.5 MiB`. */
export function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}
