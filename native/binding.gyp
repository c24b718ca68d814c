{
  "variables": {
    # Data mode needs libbpf's headers; without them only that addon is left out (the tracker says why).
    "has_libbpf": "<!(test -r /usr/include/bpf/libbpf.h && echo 1 || echo 0)"
  },
  "targets": [
    {
      # Per-byte work in portable C, every platform: LZ4 blocks into caller-given buffers (native/lz4.ts),
      # a window's leaf hashes in one call (proto/range-hash.ts). Library sources: vendor/lz4 (lz4/lz4 v1.10).
      "target_name": "tidemark_bytes",
      "sources": ["src/lz4.c", "src/leaf-hash.c", "vendor/lz4/lz4.c", "vendor/lz4/xxhash.c"],
      "cflags": ["-std=gnu11", "-O3", "-Wall", "-Werror=implicit-function-declaration"],
      "xcode_settings": {"OTHER_CFLAGS": ["-O3"]}
    },
    {
      "target_name": "tidemark_native",
      "sources": ["src/module.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "conditions": [
        # The system calls are Linux-only; elsewhere the addon builds empty and native/index.ts says why.
        ["OS=='linux'", {"sources": ["src/util.c", "src/clone.c", "src/freeze.c", "src/blkdev.c", "src/direct.c", "src/creds.c", "src/scatter.c"]}]
      ]
    },
    {
      "target_name": "tidemark_datacap",
      "sources": [],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "conditions": [
        ["OS=='linux' and has_libbpf==1", {"sources": ["src/datacap.c"], "libraries": ["-lbpf", "-lpthread"]}, {"sources": ["src/datacap-none.c"]}]
      ]
    }
  ]
}
