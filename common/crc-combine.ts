// crc32c of a concatenation from the crc32c of its parts, without reading the bytes again: zlib's
// crc32_combine (multiplication modulo the generator polynomial, x^(2^k) from a table) over the
// Castagnoli polynomial. With it each hop computes an extent's crc once and derives the frame's, the
// file's and the differential's checksums from it (docs/FORMAT.md section 1.5, docs/PROTOCOL.md).

/** The Castagnoli polynomial, bit-reversed (crc32c is a reflected CRC). */
const POLY = 0x82f63b78;

/** a(x) * b(x) modulo the polynomial, in the reflected bit order (x^0 is the top bit). a must be non-zero. */
function multmodp(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) modulo the polynomial. */
const X2N = new Uint32Array(32);
{
  let p = 0x40000000; // x^1
  X2N[0] = p;
  for (let k = 1; k < 32; k++) X2N[k] = p = multmodp(p, p);
}

/** x^(n * 2^k) modulo the polynomial; n up to 2^53. */
function x2nmodp(n: number, k: number): number {
  let p = 0x80000000; // x^0 = 1
  while (n > 0) {
    if (n % 2 === 1) p = multmodp(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

/** The operator for a second part of `len` bytes: x^(8·len), cached for the few lengths that recur. */
const ops = new Map<number, number>();
function opFor(len: number): number {
  let op = ops.get(len);
  if (op === undefined) {
    op = x2nmodp(len, 3);
    if (ops.size < 4096) ops.set(len, op);
  }
  return op;
}

/** crc32c(A ‖ B) from crc32c(A), crc32c(B) and the length of B in bytes. */
export function crc32cCombine(crcA: number, crcB: number, lenB: number): number {
  if (lenB === 0) return crcA >>> 0;
  return (multmodp(opFor(lenB), crcA >>> 0) ^ crcB) >>> 0;
}
