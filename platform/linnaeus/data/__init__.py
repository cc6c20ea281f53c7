"""The data plane: corpus format (`shards`), ingest inputs (`sources`) and job (`ingest`), image checks
(`images`), the synthetic corpus (`synthetic`), and the training stream (`stream`, `device_decode`)."""
