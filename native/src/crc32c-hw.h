// crc32c (Castagnoli) with the SSE4.2 crc32 instruction, shared by the bytes addon (crc32c.c) and data
// mode's reader thread (datacap.c). Three independent lanes keep the instruction's pipeline full (its
// latency is 3 cycles, its throughput 1 a cycle) and their crcs are joined with zlib's crc32_combine
// method (common/crc-combine.ts in C). Call crc32c_init() once, and only where the CPU has SSE4.2.
#ifndef TM_CRC32C_HW_H
#define TM_CRC32C_HW_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

#define POLY 0x82f63b78u

// a(x) * b(x) modulo the polynomial, reflected bit order (zlib's multmodp).
static uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
  }
  return p;
}

static uint32_t x2n[32];  // x^(2^k) modulo the polynomial

static void init_x2n(void) {
  uint32_t p = 1u << 30;  // x^1
  x2n[0] = p;
  for (int k = 1; k < 32; k++) x2n[k] = p = multmodp(p, p);
}

// crc of A||B from crc(A), crc(B) and B's length.
static uint32_t combine(uint32_t crc1, uint32_t crc2, uint64_t len2) {
  uint32_t p = 1u << 31;  // x^0
  unsigned k = 3;         // x^(8 * len2) = x^(2^3 * len2)
  for (; len2; len2 >>= 1, k++)
    if (len2 & 1) p = multmodp(x2n[k & 31], p);
  return multmodp(p, crc1) ^ crc2;
}

__attribute__((target("sse4.2"))) static uint64_t lane(uint64_t c, const uint8_t *p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  for (; n; n--) c = _mm_crc32_u8((uint32_t)c, *p++);
  return c;
}

// Below this the three lanes' combining costs more than it saves.
#define LANES_FROM 8192

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
  if (n < LANES_FROM) return ~(uint32_t)lane(~crc, p, n);
  size_t l = (n / 3) & ~(size_t)7;
  const uint8_t *b = p + l, *c = p + 2 * l;
  uint64_t ca = ~crc, cb = 0xffffffffu, cc = 0xffffffffu;
  for (size_t i = 0; i < l; i += 8) {
    uint64_t va, vb, vc;
    memcpy(&va, p + i, 8);
    memcpy(&vb, b + i, 8);
    memcpy(&vc, c + i, 8);
    ca = _mm_crc32_u64(ca, va);
    cb = _mm_crc32_u64(cb, vb);
    cc = _mm_crc32_u64(cc, vc);
  }
  cc = lane(cc, c + l, n - 3 * l);  // the third lane also takes the rest
  uint32_t ab = combine(~(uint32_t)ca, ~(uint32_t)cb, l);
  return combine(ab, ~(uint32_t)cc, n - 2 * l);
}

// Whether this CPU has the instruction; prepares the combine table. Call before crc32c_hw.
static inline int crc32c_init(void) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("sse4.2")) return 0;
  init_x2n();
  return 1;
}
#else
// Elsewhere no instruction: callers (crc32c.c, datacap.c) leave crcs to common/checksum.ts.
static inline int crc32c_init(void) { return 0; }
static inline uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
  (void)p;
  (void)n;
  return crc;  // never called: crc32c_init() said no
}
#endif  // __x86_64__

#endif  // TM_CRC32C_HW_H
