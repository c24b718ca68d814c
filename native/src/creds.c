// peerCredentials(fd): who is at the other end of a connected Unix socket (SO_PEERCRED: the kernel's
// record of the connecting process's pid, uid and gid, which the peer cannot forge).
// flock(fd, exclusive): an advisory whole-file lock, never waited for (LOCK_NB), held while the file is open.
// Both synchronous: neither call blocks.
#include <stdbool.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "tm.h"

static int int_arg(napi_env env, napi_value v, int *out) {
  int32_t n;
  if (napi_get_value_int32(env, v, &n) != napi_ok || n < 0) return -1;
  *out = n;
  return 0;
}

napi_value tm_peer_credentials(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t n = 1;
  int fd;
  if (napi_get_cb_info(env, info, &n, argv, NULL, NULL) != napi_ok || n < 1 || int_arg(env, argv[0], &fd) != 0) {
    napi_throw_type_error(env, NULL, "expected a file descriptor");
    return NULL;
  }
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    napi_throw(env, tm_errno_error(env, "SO_PEERCRED", errno));
    return NULL;
  }
  napi_value out, pid, uid, gid;
  napi_create_object(env, &out);
  napi_create_int32(env, cred.pid, &pid);
  napi_create_uint32(env, cred.uid, &uid);
  napi_create_uint32(env, cred.gid, &gid);
  napi_set_named_property(env, out, "pid", pid);
  napi_set_named_property(env, out, "uid", uid);
  napi_set_named_property(env, out, "gid", gid);
  return out;
}

napi_value tm_flock(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t n = 2;
  int fd;
  bool exclusive;
  if (napi_get_cb_info(env, info, &n, argv, NULL, NULL) != napi_ok || n < 2 || int_arg(env, argv[0], &fd) != 0 ||
      napi_get_value_bool(env, argv[1], &exclusive) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a file descriptor and a boolean");
    return NULL;
  }
  if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
    napi_throw(env, tm_errno_error(env, "flock", errno));
    return NULL;
  }
  return NULL;
}
