// Keep freed memory in the process instead of handing it back to the kernel at once. glibc returns the
// free top of its heap above M_TRIM_THRESHOLD (128 KiB until a large mapping is freed) and maps
// allocations above a moving M_MMAP_THRESHOLD afresh each time; the daemons free and reallocate tens of
// MiB a second (frames, extents, differentials), so the same memory is faulted in again and again. On a
// VM whose freed pages go back to the hypervisor each such fault costs ~14 us of CPU (measured here:
// 3.5 ms per MiB of fresh buffer, against 0.1 ms to reuse one). Fixed thresholds stop the churn:
// allocations up to 32 MiB (glibc's largest threshold) come from the heap, and up to trimBytes of free
// heap stay mapped for the next differential.
#include <malloc.h>
#include <stdint.h>

#include "tm.h"

napi_value tm_keep_freed_memory(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  double trim;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_double(env, argv[0], &trim) != napi_ok || !(trim >= 0) || trim > (double)INT32_MAX) {
    napi_throw_type_error(env, NULL, "expected (trimBytes: 0..2^31-1)");
    return NULL;
  }
  // "set" (both thresholds), "mmap threshold refused", "trim threshold refused" or "not glibc".
  const char *what = "not glibc";  // another C library: its own policy stands
#ifdef __GLIBC__
  // Each is tried on its own: a refused mmap threshold (32 MiB is glibc's largest on 64-bit; a 32-bit
  // build refuses it) still leaves the trim threshold worth having.
  int mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  int trim_ok = mallopt(M_TRIM_THRESHOLD, (int)trim) == 1;
  what = mmap_ok && trim_ok ? "set" : !mmap_ok ? "mmap threshold refused" : "trim threshold refused";
#endif
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &out);
  return out;
}
