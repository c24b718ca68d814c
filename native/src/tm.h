// Shared by the addon's C files: argument reading, errno errors, and blocking calls run off the main thread.
#ifndef TM_H
#define TM_H

#include <errno.h>
#include <node_api.h>

// One blocking call on the libuv pool. run() reports failure through err (an errno) and what (the step).
typedef struct tm_job {
  char *path[2];
  double num[3];  // the arguments of a call made through tm_async_numbers
  // What run() produced: bytes [skip, skip + len) of mem (malloc'd or posix_memalign'd). done() turns them
  // into the promise's value and sets mem to NULL if it took them over; otherwise they are freed.
  void *mem;
  size_t skip, len;
  napi_value (*done)(napi_env env, struct tm_job *job);
  int err;
  const char *what;
  void (*run)(struct tm_job *);
  napi_deferred deferred;
  napi_async_work work;
} tm_job;

static inline void tm_fail(tm_job *job, const char *what) {
  job->err = errno;
  job->what = what;
}

// Reads argc string arguments into malloc'd copies; on a bad argument throws a TypeError and returns -1.
int tm_string_args(napi_env env, napi_callback_info info, size_t argc, char **out);
// An Error "<what>: <strerror>" with .errno (number) and .syscall (what), for native/index.ts to explain.
napi_value tm_errno_error(napi_env env, const char *what, int err);
// Takes argc string arguments, runs run() on the pool, and returns a promise that settles when it is done.
napi_value tm_async(napi_env env, napi_callback_info info, size_t argc, void (*run)(tm_job *));
// The same for argc (at most 3) non-negative integer arguments, read into job->num; the promise settles
// with done(job), or undefined when done is NULL. done may fail by setting job->err and returning NULL.
napi_value tm_async_numbers(napi_env env, napi_callback_info info, size_t argc, void (*run)(tm_job *),
                            napi_value (*done)(napi_env, tm_job *));

napi_value tm_ficlone(napi_env env, napi_callback_info info);
napi_value tm_keep_freed_memory(napi_env env, napi_callback_info info);
napi_value tm_freeze(napi_env env, napi_callback_info info);
napi_value tm_thaw(napi_env env, napi_callback_info info);
napi_value tm_block_device_size(napi_env env, napi_callback_info info);
napi_value tm_read_direct(napi_env env, napi_callback_info info);
napi_value tm_peer_credentials(napi_env env, napi_callback_info info);
napi_value tm_flock(napi_env env, napi_callback_info info);
napi_value tm_write_many(napi_env env, napi_callback_info info);
napi_value tm_read_many(napi_env env, napi_callback_info info);

#endif
