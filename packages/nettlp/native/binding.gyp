{
  "targets": [
    {
      "target_name": "nettlp_io",
      "sources": ["nettlp_io.c"],
      "cflags": ["-O2", "-Wall"],
      "conditions": [["OS!='linux'", {"type": "none", "sources": []}]]
    }
  ]
}
