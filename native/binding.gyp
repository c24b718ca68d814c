{
  "variables": {
    # Data mode needs libbpf's headers; without them only that addon is left out (the tracker says why).
    "has_libbpf": "<!(test -r /usr/include/bpf/libbpf.h && echo 1 || echo 0)",
    # The native LZ4 and leaf hashes need liblz4's and xxhash's headers; without them native/lz4.ts falls
    # back to lz4-napi and per-block xxh64 (slower, same bytes).
    "has_lz4": "<!(test -r /usr/include/lz4.h && test -r /usr/include/xxhash.h && echo 1 || echo 0)"
  },
  "targets": [
    {
      # Per-byte work in portable C, every platform: LZ4 blocks into caller-given buffers (native/lz4.ts),
      # a window's leaf hashes in one call (proto/range-hash.ts), crc32c with SSE4.2 where the CPU has it
      # (common/checksum.ts). Libraries: the system's liblz4 and the
      # xxhash header (Debian: liblz4-dev, libxxhash-dev), as data mode uses Debian's libbpf.
      "target_name": "tidemark_bytes",
      "conditions": [
        ["has_lz4==1", {"sources": ["src/lz4.c", "src/leaf-hash.c", "src/crc32c.c"], "libraries": ["-llz4"]}, {"type": "none"}]
      ],
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
        ["OS=='linux'", {"sources": ["src/util.c", "src/clone.c", "src/freeze.c", "src/blkdev.c", "src/direct.c", "src/creds.c", "src/scatter.c", "src/malloc-tune.c"]}]
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
