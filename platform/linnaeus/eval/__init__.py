"""Evaluation: zero-shot, few-shot (SimpleShot), per-rank accuracy, retrieval and hierarchy metrics as
plain torch on feature tensors; embedding at scale and the reports live beside them."""
