// Data mode, user half: loads native/build/bpf/datacap.bpf.o for one disk, keeps it attached through
// pins in bpffs (so writes are still captured, or counted as dropped, while the agent restarts), and runs
// a reader thread that moves ring records into a queue Node takes from, adding each write record's crc32c
// while its bytes are in cache (Node's main thread then need not read them again). A separate addon from
// tidemark_native because it links libbpf: hosts without it lose data mode only.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../bpf/datacap.h"
#include "crc32c-hw.h"

#define MAX_HANDLES 64
#define CHUNK (4u << 20)

static int have_crc;  // the CPU has SSE4.2 (crc32c_init): the reader fills in records' crc

typedef struct chunk {
  struct chunk *next;
  size_t len, off;  // bytes filled and visible to take(), bytes already taken (both under mu)
  size_t wlen;      // bytes the reader wrote (>= len; only the reader thread touches it)
  unsigned char data[];
} chunk;

typedef struct {
  int used;
  int link_fd, ring_fd, ctl_fd, bits_fd, link2_fd, link3_fd, link4_fd, prog_fd, prog2_fd;
  struct dc_ctl *ctl;
  uint64_t *bits;
  size_t words;
  unsigned chunk_shift;
  struct ring_buffer *rb;
  pthread_t thread;
  int running, stop;
  pthread_mutex_t mu;
  chunk *head, *tail;
  chunk *pool;  // emptied chunks for reuse (under mu)
  int pooled;
  size_t queued, max_queue;  // queued: published bytes not taken (written under mu, read atomically)
  uint64_t taken_records;
  int reader_tid;  // the reader thread's id (its CPU time: /proc/self/task/<tid>/stat)
  int sched_fifo;  // 1: the reader runs SCHED_FIFO; -errno: asked for and refused
  struct bpf_object *aux;  // calib_scan and mark, loaded on demand, sharing ring and ctl
} dc_handle;

// The helper programs (calibration scan, stream marker), sharing this handle's ring and ctl maps.
static int aux_load(dc_handle *h, const char *obj_path, const char **what) {
  if (h->aux) return 0;
  struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
  int err = (int)libbpf_get_error(obj);
  if (err) {
    *what = "open BPF object";
    return err;
  }
  struct bpf_map *ctlm = bpf_object__find_map_by_name(obj, "ctl"), *ringm = bpf_object__find_map_by_name(obj, "ring");
  struct bpf_program *p;
  bpf_object__for_each_program(p, obj) bpf_program__set_autoload(p, strcmp(bpf_program__name(p), "calib_scan") == 0 || strcmp(bpf_program__name(p), "stream_mark") == 0);
  if (!ctlm || !ringm) err = -ENOENT;
  if (!err) err = bpf_map__reuse_fd(ctlm, h->ctl_fd);
  if (!err) err = bpf_map__reuse_fd(ringm, h->ring_fd);
  if (!err) err = bpf_object__load(obj);
  if (err) {
    *what = "load helper BPF programs";
    bpf_object__close(obj);
    return err;
  }
  h->aux = obj;
  return 0;
}

static dc_handle handles[MAX_HANDLES];

static napi_value throw_err(napi_env env, const char *what, int err) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s: %s", what, strerror(err));
  napi_value msg, error, num, sys;
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &num);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "errno", num);
  napi_set_named_property(env, error, "syscall", sys);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t n = want;
  if (napi_get_cb_info(env, info, &n, argv, NULL, NULL) != napi_ok || n < want) {
    napi_throw_type_error(env, NULL, "datacap: missing arguments");
    return -1;
  }
  return 0;
}

static int get_u64(napi_env env, napi_value v, uint64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 9007199254740991.0) {
    napi_throw_type_error(env, NULL, "datacap: expected a non-negative integer");
    return -1;
  }
  *out = (uint64_t)d;
  return 0;
}

static int get_str(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok || len + 1 >= size || strlen(buf) != len) {
    napi_throw_type_error(env, NULL, "datacap: expected a path string");
    return -1;
  }
  return 0;
}

static dc_handle *get_handle(napi_env env, napi_value v) {
  uint64_t i;
  if (get_u64(env, v, &i) != 0) return NULL;
  if (i >= MAX_HANDLES || !handles[i].used) {
    napi_throw_error(env, NULL, "datacap: not an open handle");
    return NULL;
  }
  return &handles[i];
}

// The reader polls the ring on this timer: the program wakes it at once only when a ring's quarter waits
// (datacap.bpf.c: wake_flags), so records cost no wake-up each.
#define POLL_MS 10
// Emptied chunks kept for reuse (their pages stay mapped: no page faults, no zeroing, for the next ones).
// 64 MiB: at 100 MiB/s of writes the queue swings by tens of MiB between takes, and with only 4 kept every
// swing freed chunks that the next one faulted in afresh (half the agent's page faults, at ~15 us each on
// this hypervisor, in the thread that must keep the ring from overflowing).
#define POOL_MAX 16

// Ring callback on the reader thread: append the record to the tail chunk, or count it dropped (and mark
// its range for a re-read) when the queue is at its bound. No lock per record: only the reader writes
// past the tail's `len` (at `wlen`), and publish() makes what it wrote visible to take(), once a poll.
static void publish_locked(dc_handle *h) {
  if (h->tail) {
    h->queued += h->tail->wlen - h->tail->len;
    h->tail->len = h->tail->wlen;
    // All taken, nothing new: start the tail over (take() never resets it; the reader may be writing).
    if (h->tail->off == h->tail->len) h->tail->off = h->tail->len = h->tail->wlen = 0;
  }
}

static void publish(dc_handle *h) {
  pthread_mutex_lock(&h->mu);
  publish_locked(h);
  pthread_mutex_unlock(&h->mu);
}

static int on_record(void *ctx, void *data, size_t size) {
  dc_handle *h = ctx;
  struct dc_rec *r = data;
  size_t len = DC_HDR + ((r->flags & DC_WRITE) ? r->len : 0);
  if (len > size) len = size;
  chunk *t = h->tail;  // only this thread changes h->tail
  size_t unpublished = t ? t->wlen - t->len : 0;
  if (__atomic_load_n(&h->queued, __ATOMIC_ACQUIRE) + unpublished + len > h->max_queue) {
    if (r->flags & (DC_WRITE | DC_DISCARD | DC_ZEROES)) {
      uint64_t first = r->offset >> h->chunk_shift, last = (r->offset + (r->len ? r->len : 1) - 1) >> h->chunk_shift;
      for (uint64_t b = first; b <= last && (b >> 6) < h->words; b++)
        __atomic_fetch_or(&h->bits[DC_BITS_DROPPED * h->words + (b >> 6)], 1ULL << (b & 63), __ATOMIC_SEQ_CST);
    }
    __atomic_fetch_add(&h->ctl->user_drops, 1, __ATOMIC_SEQ_CST);
    return 0;
  }
  if (t == NULL || t->wlen + len > CHUNK) {
    pthread_mutex_lock(&h->mu);
    publish_locked(h);
    chunk *c = NULL;
    if (h->tail && h->tail->wlen + len <= CHUNK) c = h->tail;  // emptied by publish: room again
    else if (h->pool) {
      c = h->pool;
      h->pool = c->next;
      h->pooled--;
    }
    pthread_mutex_unlock(&h->mu);
    if (c == NULL) c = malloc(sizeof *c + CHUNK);
    if (c == NULL) {
      __atomic_fetch_add(&h->ctl->user_drops, 1, __ATOMIC_SEQ_CST);
      return 0;
    }
    if (c != h->tail) {
      c->next = NULL;
      c->len = c->off = c->wlen = 0;
      pthread_mutex_lock(&h->mu);
      if (h->tail) h->tail->next = c;
      else h->head = c;
      h->tail = c;
      pthread_mutex_unlock(&h->mu);
    }
    t = c;
  }
  struct dc_rec *q = (struct dc_rec *)(t->data + t->wlen);
  memcpy(q, data, len);
  if (have_crc && (q->flags & DC_WRITE) && len > DC_HDR) {
    q->crc = crc32c_hw(0, (const uint8_t *)q + DC_HDR, len - DC_HDR);
    q->flags |= DC_CRC;
  }
  t->wlen += len;
  return 0;
}

static void *reader(void *arg) {
  dc_handle *h = arg;
  __atomic_store_n(&h->reader_tid, (int)gettid(), __ATOMIC_SEQ_CST);
  pthread_setname_np(pthread_self(), "tm-datacap");
  while (!__atomic_load_n(&h->stop, __ATOMIC_SEQ_CST)) {
    int n = ring_buffer__poll(h->rb, POLL_MS);
    if (n < 0 && n != -EINTR) break;
    // A poll that timed out consumed nothing: records come without a wake-up (datacap.bpf.c: wake_flags).
    n = ring_buffer__consume(h->rb);
    if (n < 0 && n != -EINTR) break;
    publish(h);
  }
  publish(h);
  return NULL;
}

#define NLINKS 4  // attached programs: issue, complete, requeue, io_start

static int pin_path(char *buf, size_t size, const char *dir, const char *name) {
  return snprintf(buf, size, "%s/%s", dir, name) >= (int)size ? -1 : 0;
}

static void unpin_all(const char *dir) {
  const char *names[] = {"link", "ring", "ctl", "bits", "link2", "link3", "link4"};
  char p[512];
  for (size_t i = 0; i < 7; i++)
    if (pin_path(p, sizeof p, dir, names[i]) == 0) unlink(p);
}

static void close_fds(dc_handle *h) {
  if (h->ctl && h->ctl != MAP_FAILED) munmap(h->ctl, sizeof *h->ctl);
  if (h->bits && h->bits != MAP_FAILED) munmap(h->bits, 3 * h->words * 8);
  int *fds[] = {&h->link_fd, &h->ring_fd, &h->ctl_fd, &h->bits_fd, &h->link2_fd, &h->link3_fd, &h->link4_fd, &h->prog_fd, &h->prog2_fd};
  for (size_t i = 0; i < 9; i++)
    if (*fds[i] >= 0) close(*fds[i]);
}

// Fresh load and attach; pins everything under dir. Returns 0 or -errno, with *what the failed step.
static int load_fresh(dc_handle *h, const char *obj_path, const char *dir, uint64_t major, uint64_t minor, uint64_t start, uint64_t end,
                      uint64_t ring_bytes, const char **what) {
  struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
  int err = (int)libbpf_get_error(obj);
  if (err) {
    *what = "open BPF object";
    return err;
  }
  struct bpf_map *m, *ring = NULL, *ctl = NULL, *bits = NULL;
  bpf_object__for_each_map(m, obj) {
    const char *name = bpf_map__name(m);
    size_t nlen = strlen(name);
    if (strcmp(name, "ring") == 0) ring = m;
    else if (strcmp(name, "ctl") == 0) ctl = m;
    else if (strcmp(name, "bits") == 0) bits = m;
    else if (nlen >= 7 && strcmp(name + nlen - 7, ".rodata") == 0) {
      size_t sz;
      // The const volatile cfg_* globals, in declaration order.
      struct __attribute__((packed)) {
        uint32_t major, minor;
        uint64_t start, end;
        uint32_t chunk_shift, words;
        uint64_t wake_bytes;
      } *cfg = (void *)bpf_map__initial_value(m, &sz);
      if (cfg == NULL || sz < sizeof *cfg) {
        *what = "BPF object: unexpected .rodata";
        bpf_object__close(obj);
        return -EINVAL;
      }
      cfg->major = (uint32_t)major;
      cfg->minor = (uint32_t)minor;
      cfg->start = start;
      cfg->end = end;
      cfg->chunk_shift = h->chunk_shift;
      cfg->words = (uint32_t)h->words;
      cfg->wake_bytes = ring_bytes / 4;
    }
  }
  if (!ring || !ctl || !bits) {
    *what = "BPF object: maps missing";
    bpf_object__close(obj);
    return -EINVAL;
  }
  if ((err = bpf_map__set_max_entries(ring, (uint32_t)ring_bytes)) || (err = bpf_map__set_max_entries(bits, (uint32_t)(3 * h->words)))) {
    *what = "size BPF maps";
    bpf_object__close(obj);
    return err;
  }
  if ((err = bpf_object__load(obj))) {
    *what = "load BPF program (verifier or missing helpers)";
    bpf_object__close(obj);
    return err;
  }
  // Capture at issue; check completions, count requeues and never-issued flush writes (native/bpf/datacap.bpf.c says why).
  const char *progs[NLINKS] = {"datacap", "datacap_end", "datacap_requeue", "datacap_start"};
  const char *tps[NLINKS] = {"block_rq_issue", "block_rq_complete", "block_rq_requeue", "block_io_start"};
  const char *pins[NLINKS] = {"link", "link2", "link3", "link4"};
  const char *fails[NLINKS] = {"attach raw tracepoint block_rq_issue", "attach raw tracepoint block_rq_complete", "attach raw tracepoint block_rq_requeue", "attach raw tracepoint block_io_start"};
  int *link_fds[NLINKS] = {&h->link_fd, &h->link2_fd, &h->link3_fd, &h->link4_fd};
  struct bpf_link *links[NLINKS] = {NULL, NULL, NULL, NULL};
  for (int i = 0; i < NLINKS && !err; i++) {
    struct bpf_program *prog = bpf_object__find_program_by_name(obj, progs[i]);
    links[i] = prog ? bpf_program__attach_raw_tracepoint(prog, tps[i]) : NULL;
    err = links[i] ? (int)libbpf_get_error(links[i]) : -ENOENT;
    if (err) {
      links[i] = NULL;
      *what = fails[i];
    }
  }
  if (err) {
    for (int i = 0; i < NLINKS; i++)
      if (links[i]) bpf_link__destroy(links[i]);
    bpf_object__close(obj);
    return err;
  }
  char p[512];
  int bad = 0;
  mkdir(dir, 0700);
  unpin_all(dir);
  if ((pin_path(p, sizeof p, dir, "ring") || (err = bpf_map__pin(ring, p))) || (pin_path(p, sizeof p, dir, "ctl") || (err = bpf_map__pin(ctl, p))) ||
      (pin_path(p, sizeof p, dir, "bits") || (err = bpf_map__pin(bits, p)))) {
    bad = 1;
  }
  for (int i = 0; i < NLINKS && !bad; i++)
    if (pin_path(p, sizeof p, dir, pins[i]) || (err = bpf_link__pin(links[i], p))) bad = 1;
  if (bad) {
    *what = "pin BPF maps and links in bpffs";
    unpin_all(dir);
    for (int i = 0; i < NLINKS; i++) bpf_link__destroy(links[i]);
    bpf_object__close(obj);
    return err ? err : -ENAMETOOLONG;
  }
  for (int i = 0; i < NLINKS; i++) {
    int fd = bpf_link__fd(links[i]);
    *link_fds[i] = dup(fd);
    // The pins and our fds keep program and maps alive. A disconnected link's destroy frees it without
    // closing its fd: close it here, or the program stays attached after close(detach) until we exit.
    bpf_link__disconnect(links[i]);
    bpf_link__destroy(links[i]);
    close(fd);
  }
  h->ring_fd = dup(bpf_map__fd(ring));
  h->ctl_fd = dup(bpf_map__fd(ctl));
  h->bits_fd = dup(bpf_map__fd(bits));
  // The object itself is no longer needed.
  bpf_object__close(obj);
  return 0;
}

static int open_pinned(dc_handle *h, const char *dir) {
  char p[512];
  const char *names[] = {"link", "ring", "ctl", "bits", "link2", "link3", "link4"};
  int *fds[] = {&h->link_fd, &h->ring_fd, &h->ctl_fd, &h->bits_fd, &h->link2_fd, &h->link3_fd, &h->link4_fd};
  for (size_t i = 0; i < 7; i++) {
    if (pin_path(p, sizeof p, dir, names[i])) return -ENAMETOOLONG;
    *fds[i] = bpf_obj_get(p);
    // link4 (block_io_start) is newer than the rest: pins of an older version run on without it.
    if (*fds[i] < 0 && i == 6 && errno == ENOENT) continue;
    if (*fds[i] < 0) return -errno;
  }
  // The pinned bitmap must be the size this volume needs, or the pins belong to another configuration.
  struct bpf_map_info info = {0};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(h->bits_fd, &info, &len) != 0) return -errno;
  if (info.max_entries != 3 * h->words) return -ESTALE;
  return 0;
}

// The program a link runs (for its recursion-miss counter), or -1.
static int prog_of_link(int link_fd) {
  struct bpf_link_info info = {0};
  uint32_t len = sizeof info;
  if (link_fd < 0 || bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0) return -1;
  return bpf_prog_get_fd_by_id(info.prog_id);
}

static double misses_of(int prog_fd) {
  struct bpf_prog_info info = {0};
  uint32_t len = sizeof info;
  if (prog_fd < 0 || bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) return -1;
  return (double)info.recursion_misses;
}

// Time the kernel spent in a program and how often it ran (counted only while kernel.bpf_stats_enabled=1).
static void runtime_of(int prog_fd, double *ns, double *cnt) {
  struct bpf_prog_info info = {0};
  uint32_t len = sizeof info;
  *ns = *cnt = -1;
  if (prog_fd < 0 || bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) return;
  *ns = (double)info.run_time_ns;
  *cnt = (double)info.run_cnt;
}

// open(objPath, pinDir, major, minor, startByte, endByte, chunkShift, ringBytes, maxQueueBytes, fifoPriority, resume)
// -> { handle, resumed }
static napi_value dc_open(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  if (get_args(env, info, 11, argv)) return NULL;
  char obj_path[4096], dir[400];
  uint64_t major, minor, start, end, shift, ring_bytes, max_queue, fifo, resume;
  if (get_str(env, argv[0], obj_path, sizeof obj_path) || get_str(env, argv[1], dir, sizeof dir) || get_u64(env, argv[2], &major) ||
      get_u64(env, argv[3], &minor) || get_u64(env, argv[4], &start) || get_u64(env, argv[5], &end) || get_u64(env, argv[6], &shift) ||
      get_u64(env, argv[7], &ring_bytes) || get_u64(env, argv[8], &max_queue) || get_u64(env, argv[9], &fifo) || get_u64(env, argv[10], &resume))
    return NULL;
  int slot = -1;
  for (int i = 0; i < MAX_HANDLES; i++)
    if (!handles[i].used) {
      slot = i;
      break;
    }
  if (slot < 0) return throw_err(env, "datacap: too many volumes", EMFILE);
  dc_handle *h = &handles[slot];
  memset(h, 0, sizeof *h);
  h->link_fd = h->ring_fd = h->ctl_fd = h->bits_fd = h->link2_fd = h->link3_fd = h->link4_fd = h->prog_fd = h->prog2_fd = -1;
  h->chunk_shift = (unsigned)shift;
  uint64_t bits = ((end - start) + (1ULL << shift) - 1) >> shift;
  h->words = (size_t)((bits + 63) / 64);
  h->max_queue = max_queue;
  libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
  int resumed = 0, err = 0;
  const char *what = "open pinned BPF maps";
  if (resume) {
    err = open_pinned(h, dir);
    if (err == 0) resumed = 1;
    else close_fds(h), h->ctl = NULL, h->bits = NULL, h->link_fd = h->ring_fd = h->ctl_fd = h->bits_fd = h->link2_fd = h->link3_fd = h->link4_fd = -1;
  }
  if (!resumed) {
    err = load_fresh(h, obj_path, dir, major, minor, start, end, ring_bytes, &what);
    if (err) return throw_err(env, what, -err);
  }
  h->prog_fd = prog_of_link(h->link_fd);
  h->prog2_fd = prog_of_link(h->link2_fd);
  h->ctl = mmap(NULL, sizeof *h->ctl, PROT_READ | PROT_WRITE, MAP_SHARED, h->ctl_fd, 0);
  h->bits = mmap(NULL, 3 * h->words * 8, PROT_READ | PROT_WRITE, MAP_SHARED, h->bits_fd, 0);
  if (h->ctl == MAP_FAILED || h->bits == MAP_FAILED) {
    err = errno;
    close_fds(h);
    return throw_err(env, "mmap BPF maps", err);
  }
  h->rb = ring_buffer__new(h->ring_fd, on_record, h, NULL);
  if (h->rb == NULL) {
    err = errno;
    close_fds(h);
    return throw_err(env, "ring_buffer__new", err);
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (fifo > 0) {
    struct sched_param sp = {.sched_priority = (int)fifo};
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
    pthread_attr_setschedparam(&attr, &sp);
  }
  err = pthread_create(&h->thread, &attr, reader, h);
  if (err == EPERM && fifo > 0) {
    h->sched_fifo = -EPERM;  // not allowed: run ordinarily scheduled, and say so in stats
    pthread_attr_setinheritsched(&attr, PTHREAD_INHERIT_SCHED);
    err = pthread_create(&h->thread, &attr, reader, h);
  } else if (err == 0 && fifo > 0) {
    h->sched_fifo = 1;
  }
  pthread_attr_destroy(&attr);
  if (err) {
    ring_buffer__free(h->rb);
    close_fds(h);
    return throw_err(env, "pthread_create", err);
  }
  h->running = 1;
  h->used = 1;
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_uint32(env, (uint32_t)slot, &v);
  napi_set_named_property(env, out, "handle", v);
  napi_get_boolean(env, resumed, &v);
  napi_set_named_property(env, out, "resumed", v);
  return out;
}

// take(handle, maxBytes) -> Buffer of whole records (possibly empty). At least one record if any is queued.
// Layout (docs/FORMAT.md 9.6): u32 record count n, u32 0, the n 32-byte headers, then the records' data in
// the same order. Data apart from the headers puts the pieces of one request side by side, so the agent
// joins them into one extent by a view instead of copying them together.
#define TAKE_PREFIX 8
static napi_value dc_take(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  uint64_t max;
  if (!h || get_u64(env, argv[1], &max)) return NULL;
  pthread_mutex_lock(&h->mu);
  // Size first: whole records only, up to max (at least one). A walk over headers: ~1000 per 4 MiB.
  size_t total = 0, nrec = 0;
  for (chunk *c = h->head; c; c = c->next) {
    for (size_t off = c->off; off < c->len;) {
      struct dc_rec *r = (struct dc_rec *)(c->data + off);
      size_t len = DC_HDR + ((r->flags & DC_WRITE) ? r->len : 0);
      if (total > 0 && total + len > max) goto sized;
      total += len;
      nrec++;
      off += len;
    }
  }
sized:;
  void *mem;
  napi_value buf;
  if (napi_create_buffer(env, nrec ? TAKE_PREFIX + total : 0, &mem, &buf) != napi_ok) {
    pthread_mutex_unlock(&h->mu);
    napi_throw_error(env, NULL, "datacap: out of memory");
    return NULL;
  }
  if (nrec == 0) {
    pthread_mutex_unlock(&h->mu);
    return buf;
  }
  unsigned char *out = mem;
  uint32_t n32 = (uint32_t)nrec, zero = 0;
  memcpy(out, &n32, 4);
  memcpy(out + 4, &zero, 4);
  unsigned char *hdr = out + TAKE_PREFIX, *dat = hdr + nrec * DC_HDR;
  for (size_t i = 0; i < nrec && h->head;) {
    chunk *c = h->head;
    while (i < nrec && c->off < c->len) {
      struct dc_rec *r = (struct dc_rec *)(c->data + c->off);
      size_t dlen = (r->flags & DC_WRITE) ? r->len : 0;
      memcpy(hdr, r, DC_HDR);
      memcpy(dat, (unsigned char *)r + DC_HDR, dlen);
      hdr += DC_HDR;
      dat += dlen;
      c->off += DC_HDR + dlen;
      i++;
    }
    if (c->off == c->len && c != h->tail) {
      // Not the tail, so the reader is done with it: keep it for reuse.
      h->head = c->next;
      if (h->pooled < POOL_MAX) {
        c->next = h->pool;
        h->pool = c;
        h->pooled++;
      } else {
        free(c);
      }
    } else if (i < nrec) {
      break;  // cannot happen: the walk above counted only published records
    }
  }
  __atomic_store_n(&h->queued, h->queued - total, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&h->mu);
  return buf;
}

static void set_num(napi_env env, napi_value obj, const char *name, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, name, n);
}

static napi_value dc_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  if (!h) return NULL;
  struct dc_ctl c;
  memcpy(&c, h->ctl, sizeof c);  // fields are read individually; each is a plain counter
  pthread_mutex_lock(&h->mu);
  size_t queued = h->queued;
  pthread_mutex_unlock(&h->mu);
  napi_value out;
  napi_create_object(env, &out);
  set_num(env, out, "completions", (double)c.seq);
  set_num(env, out, "records", (double)c.records);
  set_num(env, out, "drops", (double)c.drops);
  set_num(env, out, "droppedBytes", (double)c.dropped_bytes);
  set_num(env, out, "errors", (double)c.errors);
  set_num(env, out, "userDrops", (double)c.user_drops);
  set_num(env, out, "epoch", (double)c.epoch);
  set_num(env, out, "queuedBytes", (double)queued);
  set_num(env, out, "calibrated", c.page_offset_base != 0 ? 1 : 0);
  set_num(env, out, "schedFifo", (double)h->sched_fifo);
  set_num(env, out, "empty", (double)c.empty);
  set_num(env, out, "statWrites", (double)c.stat_writes);
  set_num(env, out, "statDiscards", (double)c.stat_discards);
  set_num(env, out, "otherOps", (double)c.other_ops);
  // Invocations the kernel skipped because the same copy was already running on that CPU. The first
  // copy's are taken by the second; one the second skipped may be lost (see datacap.bpf.c).
  set_num(env, out, "issueSkips", misses_of(h->prog_fd));
  set_num(env, out, "endSkips", misses_of(h->prog2_fd));
  set_num(env, out, "ends", (double)c.ends);
  set_num(env, out, "unseen", (double)c.unseen);
  set_num(env, out, "requeues", (double)c.requeues);
  set_num(env, out, "flushStarts", (double)c.flush_starts);
  double ns, cnt;
  runtime_of(h->prog_fd, &ns, &cnt);
  set_num(env, out, "issueRunNs", ns);
  set_num(env, out, "issueRuns", cnt);
  runtime_of(h->prog2_fd, &ns, &cnt);
  set_num(env, out, "endRunNs", ns);
  set_num(env, out, "endRuns", cnt);
  set_num(env, out, "readerTid", (double)__atomic_load_n(&h->reader_tid, __ATOMIC_SEQ_CST));
  return out;
}

// flip(handle): empty the bitmap of the next epoch, then make it current. Writes counted in the
// previous epoch's bitmap stay there until the flip after this one.
static napi_value dc_flip(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  if (!h) return NULL;
  uint64_t e = __atomic_load_n(&h->ctl->epoch, __ATOMIC_SEQ_CST);
  uint64_t *next = &h->bits[((e + 1) & 1) * h->words];
  for (size_t i = 0; i < h->words; i++) __atomic_store_n(&next[i], 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&h->ctl->epoch, e + 1, __ATOMIC_SEQ_CST);
  napi_value v;
  napi_create_double(env, (double)(e + 1), &v);
  return v;
}

// bitmap(handle, which) -> Buffer copy of that bitmap's words (little-endian u64).
static napi_value dc_bitmap(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  uint64_t which;
  if (!h || get_u64(env, argv[1], &which)) return NULL;
  if (which > 2) return throw_err(env, "datacap bitmap", EINVAL);
  void *mem;
  napi_value buf;
  napi_create_buffer(env, h->words * 8, &mem, &buf);
  uint64_t *dst = mem;
  for (size_t i = 0; i < h->words; i++) dst[i] = __atomic_load_n(&h->bits[which * h->words + i], __ATOMIC_SEQ_CST);
  return buf;
}

// clearBits(handle, which, buffer): clear exactly the bits set in buffer (bits set since stay set).
static napi_value dc_clear_bits(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  uint64_t which;
  if (!h || get_u64(env, argv[1], &which)) return NULL;
  void *data;
  size_t len;
  if (which > 2 || napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok || len != h->words * 8) return throw_err(env, "datacap clearBits", EINVAL);
  uint64_t w[1];
  for (size_t i = 0; i < h->words; i++) {
    memcpy(w, (char *)data + i * 8, 8);
    if (w[0]) __atomic_fetch_and(&h->bits[which * h->words + i], ~w[0], __ATOMIC_SEQ_CST);
  }
  return NULL;
}

static int pfn_of(void *addr, uint64_t *pfn) {
  int fd = open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return -errno;
  uint64_t e = 0;
  ssize_t n = pread(fd, &e, 8, (off_t)((uintptr_t)addr / 4096 * 8));
  close(fd);
  if (n != 8) return -EIO;
  if (!(e >> 63) || (e & ((1ULL << 55) - 1)) == 0) return -EPERM;  // not present, or PFNs hidden (not root)
  *pfn = e & ((1ULL << 55) - 1);
  return 0;
}

static int run_scan(int prog_fd, struct dc_ctl *ctl, uint64_t phys, const uint64_t canary[2], uint64_t start, uint64_t count, uint64_t *found) {
  uint64_t args[5] = {phys, canary[0], canary[1], start, count};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args, .ctx_size_in = sizeof args);
  ctl->scan_found = 0;
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) return -errno;
  *found = __atomic_load_n(&ctl->scan_found, __ATOMIC_SEQ_CST);
  return 0;
}

// calibrate(handle, objPath, devicePath, sector, deviceStart): find page_offset_base and vmemmap_base (see
// the issue notes in datacap.ts) and store them for the program. `sector` is on the disk (as the programs
// see requests); devicePath starts at disk sector `deviceStart` (a partition's start, else 0), so the
// calibration read goes to sector - deviceStart of it. Returns { pageOffsetBase, vmemmapBase } as strings.
static napi_value dc_calibrate(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (get_args(env, info, 5, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  char obj_path[4096], dev[4096];
  uint64_t sector, dev_start;
  if (!h || get_str(env, argv[1], obj_path, sizeof obj_path) || get_str(env, argv[2], dev, sizeof dev) || get_u64(env, argv[3], &sector) || get_u64(env, argv[4], &dev_start)) return NULL;
  if (dev_start > sector) return throw_err(env, "calibrate: the sector is before the device's start", EINVAL);
  const char *what = "calibrate";
  int err = 0;
  void *buf = NULL;
  int fd = -1;
  struct bpf_object *obj = NULL;
  uint64_t pob = 0, vmb = 0, pfn = 0;
  if (posix_memalign(&buf, 4096, 4096) != 0) return throw_err(env, "calibrate: memory", ENOMEM);
  uint64_t canary[2];
  if (getrandom(canary, sizeof canary, 0) != sizeof canary) {
    err = EIO, what = "getrandom";
    goto out;
  }
  memcpy(buf, canary, sizeof canary);
  if (mlock(buf, 4096) != 0) {
    err = errno, what = "mlock";
    goto out;
  }
  if ((err = -pfn_of(buf, &pfn))) {
    what = "read PFN from /proc/self/pagemap";
    goto out;
  }
  if ((err = -aux_load(h, obj_path, &what))) goto out;
  obj = h->aux;
  int prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "calib_scan"));
  // The direct map starts on a 1 GiB boundary at or above 0xffff888000000000 (4-level paging); the first
  // base where our page's physical address shows our canary is it. Stops before vmalloc space matters:
  // the direct map comes first.
  if ((err = -run_scan(prog_fd, h->ctl, pfn << 12, canary, 0xffff888000000000ULL, (0xfffffe0000000000ULL - 0xffff888000000000ULL) >> 30, &pob))) {
    what = "run calibration scan";
    goto out;
  }
  if (pob == 0) {
    err = ENXIO, what = "find the kernel direct map (page_offset_base)";
    goto out;
  }
  // vmemmap_base: the struct page the block layer uses for our page, seen by the program on an O_DIRECT read.
  fd = open(dev, O_RDONLY | O_DIRECT);
  if (fd < 0) {
    err = errno, what = "open device";
    goto out;
  }
  for (int attempt = 0; attempt < 5 && vmb == 0; attempt++) {
    h->ctl->calib_page = 0;
    __atomic_store_n(&h->ctl->calib_sector, sector + 1, __ATOMIC_SEQ_CST);
    if (pread(fd, buf, 4096, (off_t)((sector - dev_start) * 512)) != 4096) {
      err = errno ? errno : EIO, what = "O_DIRECT read for calibration";
      goto out;
    }
    uint64_t page = __atomic_load_n(&h->ctl->calib_page, __ATOMIC_SEQ_CST);
    __atomic_store_n(&h->ctl->calib_sector, 0, __ATOMIC_SEQ_CST);
    struct btf *btf = btf__load_vmlinux_btf();
    int id = btf ? btf__find_by_name_kind(btf, "page", BTF_KIND_STRUCT) : -1;
    uint64_t psize = id > 0 ? (uint64_t)btf__resolve_size(btf, id) : 64;
    btf__free(btf);
    if (page == 0 || page < pfn * psize) continue;
    uint64_t cand = page - pfn * psize;
    // Check it: our page through the direct map must hold what the read put there.
    uint64_t now[2], found = 0;
    memcpy(now, buf, sizeof now);
    if (getrandom(canary, sizeof canary, 0) != sizeof canary) continue;
    memcpy(buf, canary, sizeof canary);
    if (run_scan(prog_fd, h->ctl, pfn << 12, canary, pob, 1, &found) == 0 && found == pob && (cand & ((1ULL << 30) - 1)) == 0) vmb = cand;
    (void)now;
  }
  if (vmb == 0) {
    err = ENXIO, what = "find the kernel page array (vmemmap_base)";
    goto out;
  }
  h->ctl->vmemmap_base = vmb;
  __atomic_store_n(&h->ctl->page_offset_base, pob, __ATOMIC_SEQ_CST);  // last: it switches capture on
out:
  if (fd >= 0) close(fd);
  if (buf) munlock(buf, 4096), free(buf);
  if (err) return throw_err(env, what, err);
  napi_value out, v;
  char s[32];
  napi_create_object(env, &out);
  snprintf(s, sizeof s, "0x%llx", (unsigned long long)pob);
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "pageOffsetBase", v);
  snprintf(s, sizeof s, "0x%llx", (unsigned long long)vmb);
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "vmemmapBase", v);
  return out;
}

// mark(handle, objPath, token) -> true when the marker is in the ring, false when the ring is full.
static napi_value dc_mark(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  char obj_path[4096];
  uint64_t token;
  if (!h || get_str(env, argv[1], obj_path, sizeof obj_path) || get_u64(env, argv[2], &token)) return NULL;
  const char *what = "mark";
  int err = aux_load(h, obj_path, &what);
  if (err) return throw_err(env, what, -err);
  uint64_t args[1] = {token};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args, .ctx_size_in = sizeof args);
  if (bpf_prog_test_run_opts(bpf_program__fd(bpf_object__find_program_by_name(h->aux, "stream_mark")), &opts) != 0) return throw_err(env, "run mark program", errno);
  napi_value v;
  napi_get_boolean(env, opts.retval == 0, &v);
  return v;
}

// close(handle, detach): stop the reader; with detach, unpin (the program stops once our fds close).
static napi_value dc_close(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return NULL;
  dc_handle *h = get_handle(env, argv[0]);
  uint64_t detach;
  char dir[400];
  if (!h || get_u64(env, argv[1], &detach) || get_str(env, argv[2], dir, sizeof dir)) return NULL;
  __atomic_store_n(&h->stop, 1, __ATOMIC_SEQ_CST);
  if (h->running) pthread_join(h->thread, NULL);
  ring_buffer__free(h->rb);
  if (h->aux) bpf_object__close(h->aux);
  if (detach) {
    unpin_all(dir);
    rmdir(dir);
  }
  close_fds(h);
  for (chunk *c = h->head; c;) {
    chunk *n = c->next;
    free(c);
    c = n;
  }
  for (chunk *c = h->pool; c;) {
    chunk *n = c->next;
    free(c);
    c = n;
  }
  pthread_mutex_destroy(&h->mu);
  memset(h, 0, sizeof *h);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  have_crc = crc32c_init();
  napi_property_descriptor fns[] = {
      {"open", NULL, dc_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"take", NULL, dc_take, NULL, NULL, NULL, napi_enumerable, NULL},
      {"stats", NULL, dc_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flip", NULL, dc_flip, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bitmap", NULL, dc_bitmap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"clearBits", NULL, dc_clear_bits, NULL, NULL, NULL, napi_enumerable, NULL},
      {"calibrate", NULL, dc_calibrate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mark", NULL, dc_mark, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, dc_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
