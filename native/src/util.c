// Plumbing for the other C files: string and number arguments, errno errors, promise-returning async work.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm.h"

int tm_string_args(napi_env env, napi_callback_info info, size_t argc, char **out) {
  napi_value argv[2];
  size_t n = 2;
  for (size_t i = 0; i < argc; i++) out[i] = NULL;
  if (argc > 2 || napi_get_cb_info(env, info, &n, argv, NULL, NULL) != napi_ok || n < argc) goto bad;
  for (size_t i = 0; i < argc; i++) {
    size_t len;
    if (napi_get_value_string_utf8(env, argv[i], NULL, 0, &len) != napi_ok) goto bad;
    out[i] = malloc(len + 1);
    if (out[i] == NULL || napi_get_value_string_utf8(env, argv[i], out[i], len + 1, &len) != napi_ok) goto bad;
    // A NUL inside the string would silently cut the path short.
    if (strlen(out[i]) != len) goto bad;
  }
  return 0;
bad:
  for (size_t i = 0; i < argc; i++) free(out[i]);
  napi_throw_type_error(env, NULL, "expected path strings without NUL bytes");
  return -1;
}

napi_value tm_errno_error(napi_env env, const char *what, int err) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s: %s", what, strerror(err));
  napi_value msg, error, num, sys;
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &num);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "errno", num);
  napi_set_named_property(env, error, "syscall", sys);
  return error;
}

static void execute(napi_env env, void *data) {
  (void)env;
  tm_job *job = data;
  job->run(job);
}

static void complete(napi_env env, napi_status status, void *data) {
  tm_job *job = data;
  if (status != napi_ok && job->err == 0) {
    job->err = ECANCELED;
    job->what = "queue";
  }
  napi_value value = NULL;
  if (job->err == 0 && job->done != NULL) value = job->done(env, job);
  if (job->err == 0) {
    if (value == NULL) napi_get_undefined(env, &value);
    napi_resolve_deferred(env, job->deferred, value);
  } else {
    napi_reject_deferred(env, job->deferred, tm_errno_error(env, job->what, job->err));
  }
  napi_delete_async_work(env, job->work);
  free(job->path[0]);
  free(job->path[1]);
  free(job->mem);
  free(job);
}

// Queues a job whose arguments are read; returns its promise.
static napi_value queue(napi_env env, tm_job *job) {
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "tidemark_native", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

napi_value tm_async(napi_env env, napi_callback_info info, size_t argc, void (*run)(tm_job *)) {
  tm_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (tm_string_args(env, info, argc, job->path) != 0) {
    free(job);
    return NULL;
  }
  job->run = run;
  return queue(env, job);
}

// Reads argc (at most 3) non-negative integers a double holds exactly (up to 2^53: file offsets and
// lengths, never rounded); on a bad argument throws a TypeError and returns -1.
static int number_args(napi_env env, napi_callback_info info, size_t argc, double *out) {
  napi_value argv[3];
  size_t n = 3;
  if (argc > 3 || napi_get_cb_info(env, info, &n, argv, NULL, NULL) != napi_ok || n < argc) goto bad;
  for (size_t i = 0; i < argc; i++) {
    double v;
    if (napi_get_value_double(env, argv[i], &v) != napi_ok || !(v >= 0) || v > 9007199254740991.0 || v != (double)(long long)v) goto bad;
    out[i] = v;
  }
  return 0;
bad:
  napi_throw_type_error(env, NULL, "expected non-negative integers");
  return -1;
}

napi_value tm_async_numbers(napi_env env, napi_callback_info info, size_t argc, void (*run)(tm_job *),
                            napi_value (*done)(napi_env, tm_job *)) {
  tm_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (number_args(env, info, argc, job->num) != 0) {
    free(job);
    return NULL;
  }
  job->run = run;
  job->done = done;
  return queue(env, job);
}
