// readDirect(fd, offset, length): read a range of a block device (or file) opened with O_DIRECT, so the
// bytes come from the device, never from the page cache. A filesystem mounted on the device writes around
// the device's cache (stale data pages) and keeps metadata there newer than the disk (the jbd2
// superblock); dropping cached pages cannot fix either, because pages the filesystem still holds stay.
// O_DIRECT needs the offset, length and memory aligned: the aligned superset of the range is read into
// page-aligned memory and the requested slice is handed to JS without a copy.
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tm.h"

#define PAGE_ALIGN 4096

// The unit O_DIRECT offsets and lengths must be multiples of: the logical block size of a block device;
// for a regular file 4096, the largest block size of the filesystems that allow O_DIRECT.
static size_t io_unit(tm_job *job, int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) {
    tm_fail(job, "fstat");
    return 0;
  }
  if (!S_ISBLK(st.st_mode)) return PAGE_ALIGN;
  int lbs = 0;
  if (ioctl(fd, BLKSSZGET, &lbs) < 0) {
    tm_fail(job, "BLKSSZGET");
    return 0;
  }
  return lbs > 0 ? (size_t)lbs : 512;
}

static void run(tm_job *job) {
  if (job->num[0] > INT32_MAX) {
    job->err = EBADF;
    job->what = "fcntl";
    return;
  }
  int fd = (int)job->num[0];
  uint64_t offset = (uint64_t)job->num[1];
  uint64_t length = (uint64_t)job->num[2];
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    tm_fail(job, "fcntl");
    return;
  }
  // Without O_DIRECT the read would silently come from the page cache, which is what this call avoids.
  if (!(flags & O_DIRECT)) {
    job->err = EINVAL;
    job->what = "O_DIRECT";
    return;
  }
  size_t unit = io_unit(job, fd);
  if (unit == 0 || length == 0) return;
  uint64_t from = offset / unit * unit;
  size_t span = (size_t)((offset + length + unit - 1) / unit * unit - from);
  int e = posix_memalign(&job->mem, unit > PAGE_ALIGN ? unit : PAGE_ALIGN, span);
  if (e != 0) {
    job->mem = NULL;
    job->err = e;
    job->what = "posix_memalign";
    return;
  }
  size_t got = 0;
  while (got < span) {
    ssize_t n = pread(fd, (char *)job->mem + got, span - got, (off_t)(from + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      tm_fail(job, "pread");
      return;
    }
    got += (size_t)n;
    // 0, or a read ending inside a unit: the end of the device or file. (Another pread from there would
    // be unaligned and refused.)
    if (n == 0 || got % unit != 0) break;
  }
  job->skip = (size_t)(offset - from);
  job->len = got > job->skip ? got - job->skip : 0;
  if (job->len > length) job->len = (size_t)length;
}

static void release(napi_env env, void *data, void *mem) {
  (void)env;
  (void)data;
  free(mem);
}

static napi_value done(napi_env env, tm_job *job) {
  napi_value buf;
  napi_status s;
  if (job->len == 0) {
    s = napi_create_buffer(env, 0, NULL, &buf);
  } else {
    s = napi_create_external_buffer(env, job->len, (char *)job->mem + job->skip, release, job->mem, &buf);
    if (s == napi_ok) job->mem = NULL;  // the Buffer owns it now; release() frees it
    // A runtime built with the V8 memory sandbox (Electron) refuses memory it did not allocate: copy.
    else if (s == napi_no_external_buffers_allowed) s = napi_create_buffer_copy(env, job->len, (char *)job->mem + job->skip, NULL, &buf);
  }
  if (s != napi_ok) {
    job->err = ENOMEM;
    job->what = "create Buffer";
    return NULL;
  }
  return buf;
}

napi_value tm_read_direct(napi_env env, napi_callback_info info) { return tm_async_numbers(env, info, 3, run, done); }
