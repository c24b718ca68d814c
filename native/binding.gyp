{
  "targets": [
    {
      "target_name": "tidemark_native",
      "sources": ["src/module.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "conditions": [
        # The system calls are Linux-only; elsewhere the addon builds empty and native/index.ts says why.
        ["OS=='linux'", {"sources": ["src/util.c", "src/clone.c", "src/freeze.c", "src/blkdev.c", "src/direct.c", "src/creds.c"]}]
      ]
    }
  ]
}
