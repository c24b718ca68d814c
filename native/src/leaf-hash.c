// Leaf hashes of a window in one call: xxh64 (seed 0) of each block, the same values @node-rs/xxhash
// gives one block at a time (proto/range-hash.ts), without a call, a Buffer view and a BigInt per block.
//
//   leafHashes(data: Buffer, blockSize: number, out: BigUint64Array) -> undefined
//     out[i] = xxh64(data[i*blockSize, +blockSize)) for every block (the last may be short);
//     out must hold exactly ceil(data.length / blockSize) entries.
#include <stdint.h>

#include <node_api.h>

// Debian's libxxhash-dev header, inlined (no library to link).
#define XXH_INLINE_ALL
#include <xxhash.h>

napi_value tm_leaf_hashes(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  void *data, *out;
  size_t len, n;
  double bs;
  bool is;
  napi_typedarray_type type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_is_buffer(env, argv[0], &is) != napi_ok || !is || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok ||
      napi_get_value_double(env, argv[1], &bs) != napi_ok || !(bs >= 1 && bs <= (double)(1u << 30)) || (double)(size_t)bs != bs ||
      napi_get_typedarray_info(env, argv[2], &type, &n, &out, NULL, NULL) != napi_ok || type != napi_biguint64_array) {
    napi_throw_type_error(env, NULL, "expected (data: Buffer, blockSize: positive integer, out: BigUint64Array)");
    return NULL;
  }
  size_t b = (size_t)bs;
  if (n != (len + b - 1) / b) {
    napi_throw_range_error(env, NULL, "out must hold one entry per block of data");
    return NULL;
  }
  uint64_t *o = out;
  const char *p = data;
  for (size_t i = 0; i < n; i++) {
    size_t at = i * b;
    o[i] = XXH64(p + at, len - at < b ? len - at : b, 0);
  }
  return NULL;
}
