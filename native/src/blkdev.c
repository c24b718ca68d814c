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
