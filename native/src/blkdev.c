// blockDeviceSize(path): the size in bytes of a block device (stat reports 0 for one). Synchronous: the
// ioctl answers from memory.
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tm.h"

napi_value tm_block_device_size(napi_env env, napi_callback_info info) {
  char *path;
  if (tm_string_args(env, info, 1, &path) != 0) return NULL;
  int err = 0;
  const char *what = NULL;
  uint64_t size = 0;
  struct stat st;
  // O_NONBLOCK: opening a FIFO by mistake must not hang the event loop.
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    err = errno, what = "open";
  } else {
    if (fstat(fd, &st) < 0) err = errno, what = "fstat";
    else if (!S_ISBLK(st.st_mode)) err = ENOTBLK, what = "fstat";
    else if (ioctl(fd, BLKGETSIZE64, &size) < 0) err = errno, what = "BLKGETSIZE64";
    close(fd);
  }
  free(path);
  if (err != 0) {
    napi_throw(env, tm_errno_error(env, what, err));
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)size, &out);
  return out;
}

// dropCache(fd, offset, length): drop the kernel's cached pages of that range of an open file or block
// device (posix_fadvise DONTNEED), so the next read comes from the device. A filesystem mounted on a block
// device writes its files' data through its own cache, not the device's: pages of the device read before
// stay in the device's cache, stale, and a buffered read would return them.
napi_value tm_drop_cache(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  double n[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) {
    napi_throw_type_error(env, NULL, "dropCache(fd, offset, length)");
    return NULL;
  }
  for (int i = 0; i < 3; i++) {
    if (napi_get_value_double(env, argv[i], &n[i]) != napi_ok || n[i] < 0) {
      napi_throw_type_error(env, NULL, "dropCache: fd, offset and length are non-negative numbers");
      return NULL;
    }
  }
  int err = posix_fadvise((int)n[0], (off_t)n[1], (off_t)n[2], POSIX_FADV_DONTNEED);
  if (err != 0) {
    napi_throw(env, tm_errno_error(env, "posix_fadvise", err));
    return NULL;
  }
  return NULL;
}
