#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
static volatile int stop;
static void on(int s) { (void)s; stop = 1; }
struct ent { unsigned long long sector; unsigned bytes, cmd_flags, rq_flags, issues, completes, cpu_issue, cpu_complete, pad; unsigned long long t_issue, t_complete; };
static const char *names[] = {"issue","complete","statlike","iodone","requeue","partial","noissue","done_nocomplete","flushseq","zero","insert","error","opchange_c","opchange_d"};
static void dump(struct bpf_object *o) {
  int fd = bpf_object__find_map_fd_by_name(o, "cnt");
  for (unsigned k = 0; k < 14; k++) { unsigned long long v = 0; bpf_map_lookup_elem(fd, &k, &v); printf("%s=%llu ", names[k], v); }
  printf("\n");
  struct bpf_program *p;
  bpf_object__for_each_program(p, o) {
    struct bpf_prog_info info; memset(&info, 0, sizeof info); unsigned len = sizeof info;
    bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len);
    printf("  %s recursion_misses=%llu\n", bpf_program__name(p), (unsigned long long)info.recursion_misses);
  }
  fflush(stdout);
}
int main(int argc, char **argv) {
  struct bpf_object *o = bpf_object__open_file(argv[1], NULL);
  if (!o || bpf_object__load(o)) { perror("load"); return 1; }
  struct bpf_program *p;
  bpf_object__for_each_program(p, o) if (!bpf_program__attach(p)) { fprintf(stderr, "attach %s failed\n", bpf_program__name(p)); return 1; }
  signal(SIGINT, on); signal(SIGTERM, on);
  printf("attached\n"); fflush(stdout);
  while (!stop) sleep(1);
  dump(o);
  int mfd = bpf_object__find_map_fd_by_name(o, "missing");
  unsigned long long k, next; struct ent e; int first = 1;
  while (bpf_map_get_next_key(mfd, first ? NULL : &k, &next) == 0) {
    first = 0; k = next;
    if (bpf_map_lookup_elem(mfd, &k, &e) == 0)
      printf("MISSING rq=%llx sector=%llu bytes=%u cmd_flags=%x rq_flags(issue)=%x issues=%u cpu_issue=%u cpu_done=%u t_issue=%llu t_reissue=%llu\n", k, e.sector, e.bytes, e.cmd_flags, e.rq_flags, e.issues, e.cpu_issue, e.cpu_complete, e.t_issue, e.t_complete);
  }
  int ifd = bpf_object__find_map_fd_by_name(o, "inflight"); int n = 0; first = 1;
  while (bpf_map_get_next_key(ifd, first ? NULL : &k, &next) == 0) { first = 0; k = next; n++; if (bpf_map_lookup_elem(ifd, &k, &e) == 0 && n < 10) printf("INFLIGHT rq=%llx sector=%llu bytes=%u cmd=%x rqf=%x issues=%u completes=%u\n", k, e.sector, e.bytes, e.cmd_flags, e.rq_flags, e.issues, e.completes); }
  printf("inflight left: %d\n", n);
  return 0;
}
