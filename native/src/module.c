// Registers the addon's functions. On platforms other than Linux it exports nothing.
#include <node_api.h>

#ifdef __linux__
#include "tm.h"
#endif

static napi_value init(napi_env env, napi_value exports) {
#ifdef __linux__
  napi_property_descriptor fns[] = {
      {"ficlone", NULL, tm_ficlone, NULL, NULL, NULL, napi_enumerable, NULL},
      {"freeze", NULL, tm_freeze, NULL, NULL, NULL, napi_enumerable, NULL},
      {"thaw", NULL, tm_thaw, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blockDeviceSize", NULL, tm_block_device_size, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readDirect", NULL, tm_read_direct, NULL, NULL, NULL, napi_enumerable, NULL},
      {"peerCredentials", NULL, tm_peer_credentials, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flock", NULL, tm_flock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeMany", NULL, tm_write_many, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readMany", NULL, tm_read_many, NULL, NULL, NULL, napi_enumerable, NULL},
      {"keepFreedMemory", NULL, tm_keep_freed_memory, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);
#else
  (void)env;
#endif
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
