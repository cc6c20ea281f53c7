"""Serving logic in plain torch (no Ray): label banks, label caches, CUDA graphs, Server-Timing and the
Predictor. The model floor beneath (`linnaeus.clip`: towers, preprocessing, templates, exports) is
shared with evaluation; serving never imports evaluation, nor evaluation serving.

`serve/` wraps these in Ray Serve deployments; `jobs/predict.py` and `jobs/build_label_bank.py` run
them in Ray Data actors (`linnaeus.batch`). Everything here can be called from a test or a notebook
without a cluster.
"""
