{
  "variables": {
    # Data mode needs libbpf's headers; without them only that addon is left out (the tracker says why).
    "has_libbpf": "<!(test -r /usr/include/bpf/libbpf.h && echo 1 || echo 0)"
  },
  "targets": [
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
