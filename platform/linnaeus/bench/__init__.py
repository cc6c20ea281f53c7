"""The benchmark wing: what measures the product without being part of it. The training benchmark's four
modes (`training`), the model-only ceiling (`ceiling`), FLOP counting and MFU (`flops`), open_clip's own
trainer as the baseline (`openclip`) on the corpus rewritten as WebDataset tars (`webdataset`), the
serving benchmark (`serving`) and its HTTP load generator (`loadgen`), and the stream, planning and
evaluation benchmarks (`stream`, `planning`, `evaluation`). `jobs/benchmark_*.py` are thin entrypoints
over these; speed goals live here and in docs/benchmarks.md, never in tests."""
