// LZ4 block compression into buffers the caller gives (lz4-napi allocates and zeroes a fresh output
// buffer per call, about 30% of its time). The library is the system's liblz4 (Debian's liblz4-dev), the
// one the `lz4` CLI links. Works on any platform (no system calls): target tidemark_bytes, which also
// carries leafHashes (leaf-hash.c).
//
//   compress(src, dst, dstOffset, limit) -> n
//     LZ4 block of src written at dst[dstOffset + 4, ...) after a u32 LE of src.length (the stored
//     format lz4-napi used too: docs/FORMAT.md "LZ4 extents"). n is 4 + the block length, or 0 when it
//     would exceed limit bytes (the block is abandoned as soon as it does: incompressible data costs
//     one pass at most). Throws a RangeError when the arguments do not fit the buffers.
//   decompress(src, dst) -> n
//     Decodes the LZ4 block src (no prefix) into dst; n is the decoded length. Malformed input or an
//     output longer than dst throws an Error with code "LZ4_MALFORMED" (the decoder never writes past dst).
//   compressAsync / decompressAsync: the same on the libuv thread pool, returning promises. The caller
//     must not touch src or dst before the promise settles (references keep them alive meanwhile).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include <lz4.h>

// One compression state per thread (main thread and each pool thread): LZ4_compress_fast_extState
// resets it, so nothing of one call leaks into the next.
static _Thread_local LZ4_stream_t state;

typedef struct {
  const char *src;
  char *dst;
  int src_len, dst_cap;
  int result;
} lz4_call;

static int compress_block(lz4_call *c) {
  // acceleration 1 = `lz4 -1` (the CLI's levels below 3 are LZ4_compress_fast with acceleration 1)
  int n = LZ4_compress_fast_extState(&state, c->src, c->dst + 4, c->src_len, c->dst_cap - 4, 1);
  if (n <= 0) return 0;
  uint32_t len = (uint32_t)c->src_len;
  c->dst[0] = (char)(len & 0xff);
  c->dst[1] = (char)((len >> 8) & 0xff);
  c->dst[2] = (char)((len >> 16) & 0xff);
  c->dst[3] = (char)((len >> 24) & 0xff);
  return n + 4;
}

static int decompress_block(lz4_call *c) {
  return LZ4_decompress_safe(c->src, c->dst, c->src_len, c->dst_cap);
}

static napi_value number(napi_env env, int n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

static napi_value malformed(napi_env env) {
  napi_value msg, code, err;
  napi_create_string_utf8(env, "LZ4 block is malformed or decodes to more than its recorded length", NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, "LZ4_MALFORMED", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &err);
  return err;
}

static int buffer_arg(napi_env env, napi_value v, void **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return -1;
  return napi_get_buffer_info(env, v, data, len) == napi_ok ? 0 : -1;
}

static int int_arg(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < 0 || d > (double)INT32_MAX || (double)(int64_t)d != d) return -1;
  *out = (int64_t)d;
  return 0;
}

// Reads (src, dst[, dstOffset, limit]) into c; argv holds the JS values. Throws and returns -1 when bad.
static int read_args(napi_env env, napi_callback_info info, int compress, lz4_call *c, napi_value *argv) {
  size_t argc = 4;
  void *src, *dst;
  size_t src_len, dst_len;
  int64_t off = 0, limit = INT32_MAX;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < (compress ? 4u : 2u) ||
      buffer_arg(env, argv[0], &src, &src_len) || buffer_arg(env, argv[1], &dst, &dst_len) ||
      (compress && (int_arg(env, argv[2], &off) || int_arg(env, argv[3], &limit)))) {
    napi_throw_type_error(env, NULL, compress ? "expected (src: Buffer, dst: Buffer, dstOffset: integer, limit: integer)" : "expected (src: Buffer, dst: Buffer)");
    return -1;
  }
  if (src_len > (size_t)LZ4_MAX_INPUT_SIZE || (size_t)off > dst_len) {
    napi_throw_range_error(env, NULL, "LZ4: source longer than LZ4_MAX_INPUT_SIZE or dstOffset past the end of dst");
    return -1;
  }
  size_t cap = dst_len - (size_t)off;
  if ((size_t)limit < cap) cap = (size_t)limit;
  if (cap > INT32_MAX) cap = INT32_MAX;
  if (compress && cap < 4) cap = 4;  // room for the prefix only: the block cannot fit, result 0
  c->src = src;
  c->dst = (char *)dst + off;
  c->src_len = (int)src_len;
  c->dst_cap = (int)cap;
  c->result = 0;
  return 0;
}

static napi_value lz4_compress(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  lz4_call c;
  if (read_args(env, info, 1, &c, argv)) return NULL;
  return number(env, compress_block(&c));
}

static napi_value lz4_decompress(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  lz4_call c;
  if (read_args(env, info, 0, &c, argv)) return NULL;
  int n = decompress_block(&c);
  if (n < 0) {
    napi_throw(env, malformed(env));
    return NULL;
  }
  return number(env, n);
}

typedef struct {
  lz4_call c;
  int compress;
  napi_ref src_ref, dst_ref;
  napi_deferred deferred;
  napi_async_work work;
} lz4_job;

static void execute(napi_env env, void *data) {
  (void)env;
  lz4_job *j = data;
  j->c.result = j->compress ? compress_block(&j->c) : decompress_block(&j->c);
}

static void complete(napi_env env, napi_status status, void *data) {
  lz4_job *j = data;
  napi_delete_reference(env, j->src_ref);
  napi_delete_reference(env, j->dst_ref);
  if (status != napi_ok) {
    napi_value msg, err;
    napi_create_string_utf8(env, "LZ4: work cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  } else if (j->c.result < 0) {
    napi_reject_deferred(env, j->deferred, malformed(env));
  } else {
    napi_resolve_deferred(env, j->deferred, number(env, j->c.result));
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value start(napi_env env, napi_callback_info info, int compress) {
  napi_value argv[4], promise, name;
  lz4_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, NULL, "LZ4: out of memory");
    return NULL;
  }
  if (read_args(env, info, compress, &j->c, argv)) {
    free(j);
    return NULL;
  }
  j->compress = compress;
  napi_create_reference(env, argv[0], 1, &j->src_ref);
  napi_create_reference(env, argv[1], 1, &j->dst_ref);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, compress ? "tidemark.lz4.compress" : "tidemark.lz4.decompress", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

static napi_value lz4_compress_async(napi_env env, napi_callback_info info) { return start(env, info, 1); }
static napi_value lz4_decompress_async(napi_env env, napi_callback_info info) { return start(env, info, 0); }

static napi_value lz4_bound(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || int_arg(env, argv[0], &n) || n > LZ4_MAX_INPUT_SIZE) {
    napi_throw_type_error(env, NULL, "expected a length up to LZ4_MAX_INPUT_SIZE");
    return NULL;
  }
  return number(env, 4 + LZ4_compressBound((int)n));
}

napi_value tm_leaf_hashes(napi_env env, napi_callback_info info);  // leaf-hash.c
void tm_define_crc32c(napi_env env, napi_value exports);        // crc32c.c

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
      {"compress", NULL, lz4_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"decompress", NULL, lz4_decompress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"compressAsync", NULL, lz4_compress_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"decompressAsync", NULL, lz4_decompress_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bound", NULL, lz4_bound, NULL, NULL, NULL, napi_enumerable, NULL},
      {"leafHashes", NULL, tm_leaf_hashes, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);
  tm_define_crc32c(env, exports);
  napi_value v;
  napi_create_string_utf8(env, LZ4_versionString(), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, exports, "version", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
