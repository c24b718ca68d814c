// Data mode, kernel half: at every write request of one disk as it is issued to the driver, copy the
// bytes it writes into a ring buffer in issue order. The writer cannot see its write complete before the
// request was issued, so any write that depended on a completed one is issued, and recorded, after it:
// cutting the stream anywhere gives a crash-consistent point (a prefix of the completion history).
// Issue, not completion: on kernel 6.18 raw-tracepoint programs on block_rq_complete were measured
// never to run for completions processed in softirq on top of some tasks, with no recursion count
// (native/bpf/diag/README.md), while block_rq_issue runs in the submitter's context and was never skipped.
// A second program on block_rq_complete checks each completion against what was issued: a request whose
// issue was not captured, or that failed, is marked in the `dropped` bitmap and re-read. A third, on
// block_io_start, counts the empty cache-flush writes that are never issued (see stat_group).
// Pages are read through the kernel's direct map (x86-64): page_offset_base + pfn * 4096 + offset, with
// the two bases calibrated by user space (they are not exported to BPF on kernels without KALLSYMS_ALL).
// Whatever cannot be captured (ring full, error, not calibrated yet) is marked in the `dropped` bitmap
// so user space re-reads it; every write is also marked in the bitmap of the current epoch, so an agent
// that dies between consuming records and journaling them knows what to re-read.
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "datacap.h"

#define REQ_OP_MASK 0xff  // (1 << REQ_OP_BITS) - 1, a macro vmlinux.h cannot carry

char LICENSE[] SEC("license") = "GPL";  // bpf_probe_read_kernel needs a GPL-compatible program

// Set by the loader before load.
const volatile __u32 cfg_major = 0;
const volatile __u32 cfg_minor = 0;
const volatile __u64 cfg_start = 0;        // volume's bytes on its disk: [cfg_start, cfg_end)
const volatile __u64 cfg_end = 0;
const volatile __u32 cfg_chunk_shift = 12;  // bytes per bitmap bit: 1 << shift
const volatile __u32 cfg_words = 1;         // u64 words per bitmap
const volatile __u64 cfg_wake_bytes = 0;    // wake the reader once this much waits in the ring (0: every record)

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1 << 20);  // resized by the loader
} ring SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(map_flags, BPF_F_MMAPABLE);
  __type(key, __u32);
  __type(value, struct dc_ctl);
} ctl SEC(".maps");

// Three bitmaps of cfg_words words each: epoch 0, epoch 1, dropped.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 3);  // resized by the loader to 3 * cfg_words
  __uint(map_flags, BPF_F_MMAPABLE);
  __type(key, __u32);
  __type(value, __u64);
} bits SEC(".maps");

// Requests issued (or, never issued, started) and not completed yet, by request address: the completion
// program finds here whether the request it completes was seen, and counted, before. A full map only
// costs re-reads (conservative): such a request is counted and marked dropped at its completion instead.
struct issued {
  __u64 sector;
  __u32 bytes;
  __u32 grp;  // stat_group() this request was counted in when it was entered (0: none)
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct issued);
} inflight SEC(".maps");

struct mark_ctx {
  __u32 base;   // first word of the bitmap
  __u64 first;  // bits [first, last]
  __u64 last;
};

static long mark_word(__u64 i, void *data) {
  struct mark_ctx *m = data;
  __u64 w = (m->first >> 6) + i;
  if (w > (m->last >> 6)) return 1;
  __u64 lo = w == (m->first >> 6) ? (m->first & 63) : 0;
  __u64 hi = w == (m->last >> 6) ? (m->last & 63) : 63;
  __u64 mask = (hi == 63 ? ~0ULL : ((1ULL << (hi + 1)) - 1)) & ~((1ULL << lo) - 1);
  __u32 key = m->base + (__u32)w;
  __u64 *word = bpf_map_lookup_elem(&bits, &key);
  if (word) __sync_fetch_and_or(word, mask);
  return 0;
}

// Mark volume bytes [from, to) in bitmap `which`.
static void mark(__u32 which, __u64 from, __u64 to) {
  if (to <= from) return;
  struct mark_ctx m = {.base = which * cfg_words, .first = from >> cfg_chunk_shift, .last = (to - 1) >> cfg_chunk_shift};
  if ((m.last >> 6) >= cfg_words) return;
  if ((m.first >> 6) == (m.last >> 6)) {
    // One word (most requests): no loop.
    mark_word(0, &m);
    return;
  }
  bpf_loop((__u32)((m.last >> 6) - (m.first >> 6) + 1), mark_word, &m, 0);
}

static void dropped(struct dc_ctl *c, __u64 from, __u64 to) {
  mark(DC_BITS_DROPPED, from, to);
  __sync_fetch_and_add(&c->drops, 1);
  __sync_fetch_and_add(&c->dropped_bytes, to - from);
}

// Walk state for one completion: bios in order, each bio's segments from its iterator on.
struct walk {
  struct dc_ctl *c;
  struct bio *bio;
  struct bio_vec *vecs;
  __u32 idx;        // current segment of bio
  __u32 done;       // bytes of that segment already walked
  __u32 bio_left;   // bytes of bio not yet walked
  __u32 left;       // bytes of the completion not yet walked
  __u64 pos;        // disk byte of the next piece
  __u64 seq;
  __u32 piece;
  __u16 epoch;
  __u8 failed;
  __u8 ended;
};

// Records are submitted without waking the reader, which polls on a short timer (native/src/datacap.c):
// a wake-up per record cost the writer a context switch per write. Only once cfg_wake_bytes wait in the
// ring is the reader woken at once, so a burst cannot fill the ring between two of its polls.
static __always_inline __u64 wake_flags(void) {
  if (cfg_wake_bytes == 0) return 0;
  return bpf_ringbuf_query(&ring, BPF_RB_AVAIL_DATA) >= cfg_wake_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static int load_bio(struct walk *w, struct bio *bio) {
  w->bio = bio;
  if (!bio) return -1;
  w->vecs = BPF_CORE_READ(bio, bi_io_vec);
  w->idx = BPF_CORE_READ(bio, bi_iter.bi_idx);
  w->done = BPF_CORE_READ(bio, bi_iter.bi_bvec_done);
  w->bio_left = BPF_CORE_READ(bio, bi_iter.bi_size);
  w->pos = BPF_CORE_READ(bio, bi_iter.bi_sector) << 9;
  return 0;
}

static long piece(__u64 i, void *data) {
  struct walk *w = data;
  struct dc_ctl *c = w->c;
  if (w->left == 0) return 1;
  struct bio *bio = w->bio;
  if (w->bio_left == 0) {
    if (load_bio(w, BPF_CORE_READ(bio, bi_next)) != 0) return 1;
    return 0;
  }
  struct bio_vec bv;
  if (bpf_probe_read_kernel(&bv, sizeof bv, &w->vecs[w->idx]) != 0) {
    w->failed = 1;
    return 1;
  }
  if (w->done >= bv.bv_len) {
    w->idx++;
    w->done = 0;
    return 0;
  }
  __u64 at = (__u64)bv.bv_offset + w->done;
  __u32 n = DC_PIECE - (__u32)(at & (DC_PIECE - 1));
  if (n > bv.bv_len - w->done) n = bv.bv_len - w->done;
  if (n > w->bio_left) n = w->bio_left;
  if (n > w->left) n = w->left;
  __u64 pos = w->pos;
  int last = n == w->left || (n == w->bio_left && !BPF_CORE_READ(bio, bi_next));
  __u64 end = pos + n;
  if (pos >= cfg_start && end <= cfg_end) {
    struct dc_rec *r = bpf_ringbuf_reserve(&ring, DC_HDR + DC_PIECE, 0);
    if (!r) {
      w->failed = 1;
      return 1;
    }
    __u64 pfn = ((__u64)bv.bv_page - c->vmemmap_base) / bpf_core_type_size(struct page);
    const void *src = (const void *)(c->page_offset_base + (pfn << 12) + at);
    __u32 len = n;
    if (len > DC_PIECE) len = DC_PIECE;
    if (bpf_probe_read_kernel((char *)r + DC_HDR, len, src) != 0) {
      bpf_ringbuf_discard(r, 0);
      w->failed = 1;
      return 1;
    }
    r->seq = w->seq;
    r->offset = pos - cfg_start;
    r->len = len;
    r->flags = DC_WRITE | (last ? DC_LAST : 0);
    r->epoch = w->epoch;
    r->piece = w->piece++;
    r->crc = 0;
    bpf_ringbuf_submit(r, wake_flags());
    __sync_fetch_and_add(&c->records, 1);
  } else if (last) {
    // The boundary must still be seen when the tail lies outside this volume (a partition).
    struct dc_rec *r = bpf_ringbuf_reserve(&ring, DC_HDR, 0);
    if (!r) {
      w->failed = 1;
      return 1;
    }
    r->seq = w->seq;
    r->offset = 0;
    r->len = 0;
    r->flags = DC_LAST;
    r->epoch = w->epoch;
    r->piece = w->piece++;
    r->crc = 0;
    bpf_ringbuf_submit(r, wake_flags());
  }
  if (last) w->ended = 1;
  w->done += n;
  w->bio_left -= n;
  w->left -= n;
  w->pos += n;
  return last ? 1 : 0;
}

static __always_inline int meta_record(struct dc_ctl *c, __u64 seq, __u16 epoch, __u16 flags, __u64 offset, __u32 len) {
  struct dc_rec *r = bpf_ringbuf_reserve(&ring, DC_HDR, 0);
  if (!r) return -1;
  r->seq = seq;
  r->offset = offset;
  r->len = len;
  r->flags = flags | DC_LAST;
  r->epoch = epoch;
  r->piece = 0;
  r->crc = 0;
  bpf_ringbuf_submit(r, wake_flags());
  __sync_fetch_and_add(&c->records, 1);
  return 0;
}

// Block-layer statistics count write-group and discard completions of requests with RQF_IO_STAT, at their
// final end (blk_account_io_done skips RQF_FLUSH_SEQ: a write in a flush sequence is counted once, when
// the sequence ends) in /sys/block/X/stat. The programs keep a matching count, each request once: at
// issue; at start for the empty cache-flush writes that are never issued (datacap_start); at completion
// only for requests neither of those saw; minus requeues. So it can fall behind the stat only if a
// request passed every program unseen. Counting never rests on the completion program alone for a
// request the block layer completes: the kernel skips that program silently for a few completions
// (native/bpf/diag/README.md), and with O_DSYNC every write is followed by an empty flush write.
static __u32 stat_group(struct request *rq, __u32 op) {
  if (!(BPF_CORE_READ(rq, rq_flags) & (1U << __RQF_IO_STAT))) return 0;
  if (op == REQ_OP_DISCARD) return 2;
  return (op & 1) ? 1 : 0;  // op_is_write: odd operations write
}

static void count_group(struct dc_ctl *c, __u32 grp, int delta) {
  if (grp == 1) __sync_fetch_and_add(&c->stat_writes, delta);
  else if (grp == 2) __sync_fetch_and_add(&c->stat_discards, delta);
}

// Operations the completion program checks (the ones that change the volume).
static int changes_data(__u32 op) {
  return op == REQ_OP_WRITE || op == REQ_OP_DISCARD || op == REQ_OP_WRITE_ZEROES || op == REQ_OP_SECURE_ERASE;
}

// Enter a request the completion program will find, and count it: only if it was entered, so that a
// request the map has no room for is counted once, at its completion, as unseen.
static void enter(struct dc_ctl *c, struct request *rq, __u64 sector, __u32 bytes, __u32 grp) {
  __u64 rqk = (__u64)rq;
  struct issued is = {.sector = sector, .bytes = bytes, .grp = grp};
  if (bpf_map_update_elem(&inflight, &rqk, &is, BPF_ANY) == 0) count_group(c, grp, 1);
}

static int is_mine(struct request *rq) {
  struct gendisk *disk = BPF_CORE_READ(rq, q, disk);
  return disk && BPF_CORE_READ(disk, major) == cfg_major && BPF_CORE_READ(disk, first_minor) == cfg_minor;
}

// The volume bytes a request covers, clipped; 0 when none.
static int vol_range(__u64 sector, __u32 bytes, __u64 *from, __u64 *to) {
  __u64 f = sector << 9, t = f + bytes;
  if (f < cfg_start) f = cfg_start;
  if (t > cfg_end) t = cfg_end;
  if (t <= f) return 0;
  *from = f - cfg_start;
  *to = t - cfg_start;
  return 1;
}

SEC("raw_tp/block_rq_issue")
int datacap(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (struct request *)ctx->args[0];
  if (!is_mine(rq)) return 0;
  __u32 key = 0;
  struct dc_ctl *c = bpf_map_lookup_elem(&ctl, &key);
  if (!c) return 0;
  __u32 op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
  __u64 sector = BPF_CORE_READ(rq, __sector);
  __u32 nr_bytes = BPF_CORE_READ(rq, __data_len);
  if (op == REQ_OP_READ) {
    // Calibration: the first page of a read user space made into memory whose PFN it knows.
    if (c->calib_sector != 0 && c->calib_sector == sector + 1) {
      struct bio_vec *v = BPF_CORE_READ(rq, bio, bi_io_vec);
      struct page *p = 0;
      if (v) bpf_probe_read_kernel(&p, sizeof p, &v->bv_page);
      c->calib_page = (__u64)p;
      c->calib_sector = 0;
    }
    return 0;
  }
  __u32 grp = stat_group(rq, op);
  __u64 epoch = c->epoch;
  if (!changes_data(op)) {
    // Never checked at completion: counted here only.
    count_group(c, grp, 1);
    if (op == REQ_OP_FLUSH) meta_record(c, __sync_fetch_and_add(&c->seq, 1), (__u16)epoch, DC_FLUSH, 0, 0);
    else __sync_fetch_and_add(&c->other_ops, 1);
    return 0;
  }
  // Every such request is entered, in this volume or not, so its completion knows it was counted.
  enter(c, rq, sector, nr_bytes, grp);
  __u64 from = 0, to = 0;
  if (!vol_range(sector, nr_bytes, &from, &to)) {
    __sync_fetch_and_add(&c->empty, 1);
    return 0;
  }
  mark(epoch & 1, from, to);
  __u64 seq = __sync_fetch_and_add(&c->seq, 1);
  if (op != REQ_OP_WRITE) {
    if (meta_record(c, seq, (__u16)epoch, op == REQ_OP_WRITE_ZEROES ? DC_ZEROES : DC_DISCARD, from, (__u32)(to - from)) != 0) dropped(c, from, to);
    return 0;
  }
  if (c->page_offset_base == 0) {
    dropped(c, from, to);
    return 0;
  }
  struct walk w = {.c = c, .left = nr_bytes, .seq = seq, .epoch = (__u16)epoch};
  if (load_bio(&w, BPF_CORE_READ(rq, bio)) != 0) {
    dropped(c, from, to);
    return 0;
  }
  bpf_loop(DC_MAX_PIECES, piece, &w, 0);
  // Not captured whole: what remains (and, simply, the part already captured) is re-read.
  if (w.failed || !w.ended) dropped(c, from, to);
  return 0;
}

// Start (blk_account_io_start, in the submitter's context, like most issues): a write with no data and
// REQ_PREFLUSH or REQ_FUA is a cache flush the flush machinery completes without ever issuing it (its
// flush goes down as a separate REQ_OP_FLUSH request), yet the stat counts it as a write when it ends.
// It is counted here, where it is seen for sure, not at its completion, which the kernel may skip.
// RQF_IO_STAT is set after this tracepoint on 6.12+ (before it, at allocation, on older kernels): the
// queue's BLK_FEAT_IO_STAT (1u << 4 in include/linux/blkdev.h since 6.11) says whether it will be.
#define BLK_FEAT_IO_STAT (1U << 4)
SEC("raw_tp/block_io_start")
int datacap_start(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (struct request *)ctx->args[0];
  if (!is_mine(rq)) return 0;
  __u64 flags = BPF_CORE_READ(rq, cmd_flags);
  if ((flags & REQ_OP_MASK) != REQ_OP_WRITE || BPF_CORE_READ(rq, __data_len) != 0) return 0;
  if (!(flags & ((1ULL << __REQ_PREFLUSH) | (1ULL << __REQ_FUA)))) return 0;
  __u32 key = 0;
  struct dc_ctl *c = bpf_map_lookup_elem(&ctl, &key);
  if (!c) return 0;
  int io_stat = (BPF_CORE_READ(rq, rq_flags) & (1U << __RQF_IO_STAT)) != 0;
  struct request_queue *q = BPF_CORE_READ(rq, q);
  if (bpf_core_field_exists(q->limits.features) && (BPF_CORE_READ(q, limits.features) & BLK_FEAT_IO_STAT)) io_stat = 1;
  __sync_fetch_and_add(&c->flush_starts, 1);
  enter(c, rq, BPF_CORE_READ(rq, __sector), 0, io_stat ? 1 : 0);
  return 0;
}

// Completion: a failed write, or one whose issue was not captured (issued before the program was
// attached, or skipped by the kernel), is re-read. It runs before the request's bios end, so the drop
// is counted before the writer can see the write complete and issue anything depending on it.
SEC("raw_tp/block_rq_complete")
int datacap_end(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (struct request *)ctx->args[0];
  int error = (int)ctx->args[1];
  __u32 nr_bytes = (__u32)ctx->args[2];
  if (!is_mine(rq)) return 0;
  __u32 key = 0;
  struct dc_ctl *c = bpf_map_lookup_elem(&ctl, &key);
  if (!c) return 0;
  __u32 op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
  if (!changes_data(op)) return 0;
  __sync_fetch_and_add(&c->ends, 1);
  __u64 sector = BPF_CORE_READ(rq, __sector);
  __u32 size = BPF_CORE_READ(rq, __data_len);
  __u32 rq_flags = BPF_CORE_READ(rq, rq_flags);
  __u64 rqk = (__u64)rq;
  struct issued *is = bpf_map_lookup_elem(&inflight, &rqk);
  int seen = is != 0;
  if (is && (sector < is->sector || sector + (size >> 9) > is->sector + (is->bytes >> 9))) seen = 0;  // a stale entry
  __u64 from = 0, to = 0;
  int in_vol = vol_range(sector, size > nr_bytes ? size : nr_bytes, &from, &to);
  if (!seen) {
    // Counted as the stat counts it: once, at the end that is not part of a flush sequence.
    if (!(rq_flags & (1U << __RQF_FLUSH_SEQ))) count_group(c, stat_group(rq, op), 1);
    // An empty write (a cache flush) writes nothing.
    if (in_vol && (size != 0 || nr_bytes != 0)) {
      __sync_fetch_and_add(&c->unseen, 1);
      dropped(c, from, to);
    }
  }
  if (error != 0 && in_vol) {
    __sync_fetch_and_add(&c->errors, 1);
    dropped(c, from, to);
  }
  // A write in a flush sequence ends twice (its data, then the sequence, with no bytes): keep it until then.
  if (is && nr_bytes >= size && !(rq_flags & (1U << __RQF_FLUSH_SEQ))) bpf_map_delete_elem(&inflight, &rqk);
  return 0;
}

// A requeued request is issued again (and entered and counted again): undo the count of its issue, if
// its issue was counted (not when it was issued before the program was attached).
SEC("raw_tp/block_rq_requeue")
int datacap_requeue(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (struct request *)ctx->args[0];
  if (!is_mine(rq)) return 0;
  __u32 key = 0;
  struct dc_ctl *c = bpf_map_lookup_elem(&ctl, &key);
  if (!c) return 0;
  __sync_fetch_and_add(&c->requeues, 1);
  __u32 op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
  if (!changes_data(op)) {
    count_group(c, stat_group(rq, op), -1);
    return 0;
  }
  __u64 rqk = (__u64)rq;
  struct issued *is = bpf_map_lookup_elem(&inflight, &rqk);
  if (!is) return 0;
  count_group(c, is->grp, -1);
  bpf_map_delete_elem(&inflight, &rqk);
  return 0;
}

// Calibration scan, run by user space with BPF_PROG_TEST_RUN: the first base in
// [args[3], args[3] + args[4] * 1 GiB) where args[0] bytes in holds the 16 canary bytes args[1..2].
struct scan_ctx {
  __u64 phys, c0, c1, start;
  __u64 found;
};

static long scan_one(__u64 i, void *data) {
  struct scan_ctx *s = data;
  __u64 base = s->start + (i << 30);
  __u64 v[2] = {0, 0};
  if (bpf_probe_read_kernel(v, sizeof v, (const void *)(base + s->phys)) == 0 && v[0] == s->c0 && v[1] == s->c1) {
    s->found = base;
    return 1;
  }
  return 0;
}

SEC("raw_tp")
int calib_scan(struct bpf_raw_tracepoint_args *ctx) {
  __u32 key = 0;
  struct dc_ctl *c = bpf_map_lookup_elem(&ctl, &key);
  if (!c) return 0;
  struct scan_ctx s = {.phys = ctx->args[0], .c0 = ctx->args[1], .c1 = ctx->args[2], .start = ctx->args[3]};
  bpf_loop((__u32)ctx->args[4], scan_one, &s, 0);
  c->scan_found = s.found;
  return 0;
}

// A marker in the stream, put there by user space with BPF_PROG_TEST_RUN (token: args[0]): every record
// reserved before it comes before it. Returns 1 when the ring is full.
SEC("raw_tp")
int stream_mark(struct bpf_raw_tracepoint_args *ctx) {
  struct dc_rec *r = bpf_ringbuf_reserve(&ring, DC_HDR, 0);
  if (!r) return 1;
  r->seq = ctx->args[0];
  r->offset = 0;
  r->len = 0;
  r->flags = DC_MARK | DC_LAST;
  r->epoch = 0;
  r->piece = 0;
  r->crc = 0;
  // A capture waits for its marker (the application was just held for it): wake the reader at once.
  bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
  return 0;
}
