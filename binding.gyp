{
  "targets": [
    {
      "target_name": "fanotify",
      "sources": ["native/fanotify.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
