"""Serving logic in plain torch (no Ray): request images, label banks, label caches and the Predictor.

`serve/` wraps these in Ray Serve deployments; `jobs/predict.py` and `jobs/build_label_bank.py` run
them in Ray Data actors. Everything here can be called from a test or a notebook without a cluster.
"""
