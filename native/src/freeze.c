// freeze(mountpoint) / thaw(mountpoint): FIFREEZE flushes the filesystem and blocks new writes until
// FITHAW, so what is on the device is consistent while it is read.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tm.h"

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

// Opens the mount's root. Any other directory is refused: FIFREEZE on it would freeze the whole
// filesystem holding it, often "/", which hangs the machine.
static int open_mount_root(tm_job *job) {
  int fd = open(job->path[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    tm_fail(job, "open");
    return -1;
  }
  struct statx sx;
  if (statx(fd, "", AT_EMPTY_PATH, 0, &sx) < 0) {
    tm_fail(job, "statx");
  } else if ((sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
    job->err = EINVAL;
    job->what = "mount root";
  }
  if (job->err != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void run(tm_job *job, unsigned long request, const char *what) {
  int fd = open_mount_root(job);
  if (fd < 0) return;
  if (ioctl(fd, request, 0) < 0) tm_fail(job, what);
  close(fd);
}

static void run_freeze(tm_job *job) { run(job, FIFREEZE, "FIFREEZE"); }
static void run_thaw(tm_job *job) { run(job, FITHAW, "FITHAW"); }

napi_value tm_freeze(napi_env env, napi_callback_info info) { return tm_async(env, info, 1, run_freeze); }
napi_value tm_thaw(napi_env env, napi_callback_info info) { return tm_async(env, info, 1, run_thaw); }
