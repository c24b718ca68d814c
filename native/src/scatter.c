// writeMany(fd, buffers, offsets) and readMany(fd, offsets, lengths): many scattered positional writes or
// reads as one job on the libuv pool, in the order given, instead of one pool round trip (and one promise)
// per extent. Neighbouring ranges (each starting where the one before it ended) go as one pwritev/preadv.
// Order is kept: a later range over an earlier one lands after it, as separate writes would.
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tm.h"

#define MAX_IOV 1024

typedef struct {
  int fd;
  size_t n;
  char **ptr;         // where each range's bytes are (the caller's Buffers, or slices of out)
  size_t *len;
  uint64_t *off;
  char *out;          // readMany: the one malloc'd buffer every range is read into, back to back
  size_t outLen;
  napi_ref keep;      // writeMany: the array of Buffers, alive until the job is done
  int err;
  const char *what;
  napi_deferred deferred;
  napi_async_work work;
} scatter_job;

static void job_free(napi_env env, scatter_job *j) {
  if (j->keep != NULL) napi_delete_reference(env, j->keep);
  free(j->ptr);
  free(j->len);
  free(j->off);
  free(j->out);
  free(j);
}

// One run of neighbouring ranges [i, end) as pwritev/preadv calls, resumed after short transfers.
static int transfer_run(scatter_job *j, size_t i, size_t end, int writing) {
  struct iovec iov[MAX_IOV];
  size_t cnt = end - i;
  for (size_t k = 0; k < cnt; k++) {
    iov[k].iov_base = j->ptr[i + k];
    iov[k].iov_len = j->len[i + k];
  }
  struct iovec *v = iov;
  uint64_t pos = j->off[i];
  while (cnt > 0) {
    ssize_t n = writing ? pwritev(j->fd, v, (int)cnt, (off_t)pos) : preadv(j->fd, v, (int)cnt, (off_t)pos);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      j->err = errno;
      j->what = writing ? "pwritev" : "preadv";
      return -1;
    }
    if (n == 0) {
      // A write that writes nothing, or a read at the end of the file: the range cannot be completed.
      j->err = writing ? EIO : ENODATA;
      j->what = writing ? "pwritev" : "preadv (end of file)";
      return -1;
    }
    pos += (uint64_t)n;
    size_t left = (size_t)n;
    while (cnt > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      v++;
      cnt--;
    }
    if (cnt > 0 && left > 0) {
      v->iov_base = (char *)v->iov_base + left;
      v->iov_len -= left;
    }
  }
  return 0;
}

static void run(scatter_job *j, int writing) {
  size_t i = 0;
  while (i < j->n) {
    size_t end = i + 1;
    while (end < j->n && end - i < MAX_IOV && j->off[end] == j->off[end - 1] + j->len[end - 1] && j->len[end] > 0) end++;
    if (j->len[i] > 0 && transfer_run(j, i, end, writing) != 0) return;
    i = end;
  }
}

static void exec_write(napi_env env, void *data) {
  (void)env;
  run(data, 1);
}

static void exec_read(napi_env env, void *data) {
  (void)env;
  run(data, 0);
}

static void release(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void complete(napi_env env, napi_status status, void *data) {
  scatter_job *j = data;
  if (status != napi_ok && j->err == 0) {
    j->err = ECANCELED;
    j->what = "queue";
  }
  napi_value value = NULL;
  if (j->err == 0 && j->keep == NULL) {
    // readMany: the bytes become one Buffer (the job's memory handed over, or copied where refused).
    napi_status s;
    if (j->outLen == 0) {
      s = napi_create_buffer(env, 0, NULL, &value);
    } else {
      s = napi_create_external_buffer(env, j->outLen, j->out, release, NULL, &value);
      if (s == napi_ok) j->out = NULL;
      else if (s == napi_no_external_buffers_allowed) s = napi_create_buffer_copy(env, j->outLen, j->out, NULL, &value);
    }
    if (s != napi_ok) {
      j->err = ENOMEM;
      j->what = "create Buffer";
    }
  }
  if (j->err == 0) {
    if (value == NULL) napi_get_undefined(env, &value);
    napi_resolve_deferred(env, j->deferred, value);
  } else {
    napi_reject_deferred(env, j->deferred, tm_errno_error(env, j->what, j->err));
  }
  napi_delete_async_work(env, j->work);
  job_free(env, j);
}

static int get_offset(napi_env env, napi_value v, uint64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 9007199254740991.0 || d != (double)(long long)d) return -1;
  *out = (uint64_t)d;
  return 0;
}

// Arguments: fd, then two arrays of the same length. Fills j->n, j->off and allocates ptr/len.
static scatter_job *start(napi_env env, napi_callback_info info, napi_value *second) {
  napi_value argv[3];
  size_t argc = 3;
  uint32_t n1 = 0, n2 = 0;
  bool is1 = false, is2 = false;
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_is_array(env, argv[1], &is1) != napi_ok || napi_is_array(env, argv[2], &is2) != napi_ok || !is1 || !is2 ||
      napi_get_array_length(env, argv[1], &n1) != napi_ok || napi_get_array_length(env, argv[2], &n2) != napi_ok || n1 != n2) {
    napi_throw_type_error(env, NULL, "expected (fd, array, array) of equal lengths");
    return NULL;
  }
  scatter_job *j = calloc(1, sizeof *j);
  if (j != NULL) {
    j->fd = fd;
    j->n = n1;
    j->ptr = calloc(n1 ? n1 : 1, sizeof *j->ptr);
    j->len = calloc(n1 ? n1 : 1, sizeof *j->len);
    j->off = calloc(n1 ? n1 : 1, sizeof *j->off);
  }
  if (j == NULL || j->ptr == NULL || j->len == NULL || j->off == NULL) {
    if (j != NULL) job_free(env, j);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  second[0] = argv[1];
  second[1] = argv[2];
  return j;
}

static napi_value queue(napi_env env, scatter_job *j, napi_async_execute_callback exec) {
  napi_value promise, name;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "tidemark_scatter", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, exec, complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

napi_value tm_write_many(napi_env env, napi_callback_info info) {
  napi_value arrays[2];
  scatter_job *j = start(env, info, arrays);
  if (j == NULL) return NULL;
  for (uint32_t i = 0; i < j->n; i++) {
    napi_value b, o;
    bool isBuf = false;
    void *p;
    size_t len;
    if (napi_get_element(env, arrays[0], i, &b) != napi_ok || napi_is_buffer(env, b, &isBuf) != napi_ok || !isBuf ||
        napi_get_buffer_info(env, b, &p, &len) != napi_ok || napi_get_element(env, arrays[1], i, &o) != napi_ok || get_offset(env, o, &j->off[i]) != 0) {
      job_free(env, j);
      napi_throw_type_error(env, NULL, "writeMany: expected Buffers and non-negative integer offsets");
      return NULL;
    }
    j->ptr[i] = p;
    j->len[i] = len;
  }
  // The Buffers stay reachable (so their memory stays put) while the pool writes from them.
  if (napi_create_reference(env, arrays[0], 1, &j->keep) != napi_ok) {
    job_free(env, j);
    napi_throw_error(env, NULL, "writeMany: cannot hold the buffers");
    return NULL;
  }
  return queue(env, j, exec_write);
}

napi_value tm_read_many(napi_env env, napi_callback_info info) {
  napi_value arrays[2];
  scatter_job *j = start(env, info, arrays);
  if (j == NULL) return NULL;
  size_t total = 0;
  for (uint32_t i = 0; i < j->n; i++) {
    napi_value o, l;
    uint64_t len;
    if (napi_get_element(env, arrays[0], i, &o) != napi_ok || get_offset(env, o, &j->off[i]) != 0 ||
        napi_get_element(env, arrays[1], i, &l) != napi_ok || get_offset(env, l, &len) != 0 || len > SIZE_MAX - total) {
      job_free(env, j);
      napi_throw_type_error(env, NULL, "readMany: expected non-negative integer offsets and lengths");
      return NULL;
    }
    j->len[i] = (size_t)len;
    total += (size_t)len;
  }
  j->outLen = total;
  j->out = malloc(total ? total : 1);
  if (j->out == NULL) {
    job_free(env, j);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  size_t at = 0;
  for (uint32_t i = 0; i < j->n; i++) {
    j->ptr[i] = j->out + at;
    at += j->len[i];
  }
  return queue(env, j, exec_read);
}
