#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
#define cfg_major MAJ
#define cfg_minor MIN
enum { C_ISSUE, C_COMPLETE, C_STATLIKE, C_IODONE, C_REQUEUE, C_PARTIAL, C_NOISSUE, C_DONE_NOCOMPLETE, C_FLUSHSEQ, C_ZERO, C_INSERT, C_ERROR, C_OPCHANGE_C, C_OPCHANGE_D, C_N };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, C_N); __type(key, __u32); __type(value, __u64); } cnt SEC(".maps");
struct ent { __u64 sector; __u32 bytes, cmd_flags, rq_flags, issues, completes, cpu_issue, cpu_complete, pad; __u64 t_issue, t_complete; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 65536); __type(key, __u64); __type(value, struct ent); } inflight SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4096); __type(key, __u64); __type(value, struct ent); } missing SEC(".maps");
__u64 op_last = 0;
static void inc(__u32 k) { __u64 *v = bpf_map_lookup_elem(&cnt, &k); if (v) __sync_fetch_and_add(v, 1); }
static int mine(struct request *rq) {
  struct gendisk *d = BPF_CORE_READ(rq, q, disk);
  return d && BPF_CORE_READ(d, major) == cfg_major && BPF_CORE_READ(d, first_minor) == cfg_minor;
}
static int is_write(struct request *rq) { __u32 op = BPF_CORE_READ(rq, cmd_flags) & 0xff; return op == REQ_OP_WRITE; }
SEC("raw_tp/block_rq_issue") int d_issue(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (void *)ctx->args[0];
  if (!mine(rq) || !is_write(rq)) return 0;
  inc(C_ISSUE);
  __u64 k = (__u64)rq;
  struct ent *e = bpf_map_lookup_elem(&inflight, &k);
  if (e) { e->issues++; e->t_complete = bpf_ktime_get_ns(); e->cpu_complete = bpf_get_smp_processor_id(); bpf_map_update_elem(&missing, &k, e, BPF_ANY); bpf_map_delete_elem(&inflight, &k); }
  
  struct ent n = {.sector = BPF_CORE_READ(rq, __sector), .bytes = BPF_CORE_READ(rq, __data_len), .cmd_flags = BPF_CORE_READ(rq, cmd_flags), .rq_flags = BPF_CORE_READ(rq, rq_flags), .issues = 1, .cpu_issue = bpf_get_smp_processor_id(), .t_issue = bpf_ktime_get_ns()};
  bpf_map_update_elem(&inflight, &k, &n, BPF_ANY);
  return 0;
}
SEC("raw_tp/block_rq_insert") int d_insert(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (void *)ctx->args[0];
  if (!mine(rq) || !is_write(rq)) return 0;
  inc(C_INSERT); return 0;
}
SEC("raw_tp/block_rq_requeue") int d_requeue(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (void *)ctx->args[0];
  if (!mine(rq) || !is_write(rq)) return 0;
  inc(C_REQUEUE); return 0;
}
SEC("raw_tp/block_rq_error") int d_error(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (void *)ctx->args[0];
  if (!mine(rq) || !is_write(rq)) return 0;
  inc(C_ERROR); return 0;
}
SEC("raw_tp/block_rq_complete") int d_complete(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (void *)ctx->args[0];
  if (!mine(rq)) return 0;
  if (!is_write(rq)) { __u64 kk = (__u64)rq; if (bpf_map_lookup_elem(&inflight, &kk)) { inc(C_OPCHANGE_C); op_last = BPF_CORE_READ(rq, cmd_flags); } return 0; }
  __u32 nr = (__u32)ctx->args[2];
  __u32 rqf = BPF_CORE_READ(rq, rq_flags);
  inc(C_COMPLETE);
  if ((rqf & ((1U << __RQF_IO_STAT) | (1U << __RQF_FLUSH_SEQ))) == (1U << __RQF_IO_STAT)) inc(C_STATLIKE);
  if (rqf & (1U << __RQF_FLUSH_SEQ)) inc(C_FLUSHSEQ);
  if (nr == 0) inc(C_ZERO);
  if (nr < BPF_CORE_READ(rq, __data_len)) inc(C_PARTIAL);
  __u64 k = (__u64)rq;
  struct ent *e = bpf_map_lookup_elem(&inflight, &k);
  if (!e) { inc(C_NOISSUE); return 0; }
  e->completes++; e->cpu_complete = bpf_get_smp_processor_id(); e->t_complete = bpf_ktime_get_ns();
  return 0;
}
SEC("raw_tp/block_io_done") int d_done(struct bpf_raw_tracepoint_args *ctx) {
  struct request *rq = (void *)ctx->args[0];
  if (!mine(rq)) return 0;
  if (!is_write(rq)) { __u64 kk = (__u64)rq; if (bpf_map_lookup_elem(&inflight, &kk)) { inc(C_OPCHANGE_D); op_last = BPF_CORE_READ(rq, cmd_flags); } return 0; }
  __u32 rqf = BPF_CORE_READ(rq, rq_flags);
  if ((rqf & ((1U << __RQF_IO_STAT) | (1U << __RQF_FLUSH_SEQ))) != (1U << __RQF_IO_STAT)) return 0;
  inc(C_IODONE);
  __u64 k = (__u64)rq;
  struct ent *e = bpf_map_lookup_elem(&inflight, &k);
  if (!e) return 0;
  if (e->completes == 0) { inc(C_DONE_NOCOMPLETE); e->rq_flags = rqf; e->t_complete = bpf_ktime_get_ns(); e->cpu_complete = bpf_get_smp_processor_id(); bpf_map_update_elem(&missing, &k, e, BPF_ANY); }
  bpf_map_delete_elem(&inflight, &k);
  return 0;
}
