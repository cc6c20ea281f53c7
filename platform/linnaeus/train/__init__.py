"""Training: optimisation (`optim`, plain torch) and, as the training issue lands, the Ray Train loop,
trainer builder and checkpoints (the only modules of the project that talk to `ray.train`)."""
