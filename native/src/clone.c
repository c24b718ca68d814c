// ficlone(src, dst): a reflink copy. The clone shares the source's blocks until either is written, so a
// point-in-time view of an image costs milliseconds and no space.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "tm.h"

static void run(tm_job *job) {
  int src = open(job->path[0], O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    tm_fail(job, "open");
    return;
  }
  // O_EXCL: never clobber a file we did not create, so a failure may unlink what is there.
  int dst = open(job->path[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (dst < 0) {
    tm_fail(job, "create");
    close(src);
    return;
  }
  if (ioctl(dst, FICLONE, src) < 0) tm_fail(job, "FICLONE");
  if (close(dst) < 0 && job->err == 0) tm_fail(job, "close");
  close(src);
  if (job->err != 0) unlink(job->path[1]);
}

napi_value tm_ficlone(napi_env env, napi_callback_info info) {
  return tm_async(env, info, 2, run);
}
