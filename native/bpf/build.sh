#!/bin/sh
# Builds the data-mode BPF object (native/build/bpf/datacap.bpf.o) against this kernel's BTF. Run by
# `npm run build:bpf` (part of `npm ci`). Where the tools or BTF are missing it says so and builds nothing:
# the `data` tracker then refuses, naming the fallback (blocktrace).
set -eu
cd "$(dirname "$0")"
out=../build/bpf
if [ "$(uname -s)" != Linux ]; then echo "build:bpf: not Linux; data mode unavailable" >&2; exit 0; fi
for t in clang bpftool; do
  command -v "$t" >/dev/null 2>&1 || { echo "build:bpf: $t missing (apt-get install clang bpftool libbpf-dev); data mode unavailable" >&2; exit 0; }
done
[ -r /usr/include/bpf/bpf_helpers.h ] || { echo "build:bpf: libbpf-dev missing; data mode unavailable" >&2; exit 0; }
[ -r /sys/kernel/btf/vmlinux ] || { echo "build:bpf: no kernel BTF at /sys/kernel/btf/vmlinux; data mode unavailable" >&2; exit 0; }
mkdir -p "$out"
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$out/vmlinux.h"
clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -I"$out" -I. -c datacap.bpf.c -o "$out/datacap.bpf.o"
echo "build:bpf: $out/datacap.bpf.o"
