"""The service's own Prometheus metrics (next to Ray Serve's `ray_serve_*`), via `ray.util.metrics`.

Ray exports them on each node's metrics port with a `ray_` prefix, e.g. `ray_linnaeus_requests_total`.
Objects are created inside replicas (`Metrics()` in a deployment's constructor), never at import.
"""

from __future__ import annotations

from ray.util import metrics

LATENCY_BOUNDARIES = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]

NAMES = ("linnaeus_requests", "linnaeus_request_errors", "linnaeus_request_latency_s", "linnaeus_images",
         "linnaeus_batch_size", "linnaeus_label_cache_hits", "linnaeus_label_cache_misses",
         "linnaeus_queue_depth")


class IngressMetrics:
    def __init__(self):
        self.requests = metrics.Counter("linnaeus_requests", "HTTP requests by endpoint and status",
                                        tag_keys=("endpoint", "status"))
        self.errors = metrics.Counter("linnaeus_request_errors", "refused or failed requests by reason",
                                      tag_keys=("endpoint", "reason"))
        self.latency = metrics.Histogram("linnaeus_request_latency_s", "request latency in the ingress",
                                         boundaries=LATENCY_BOUNDARIES, tag_keys=("endpoint",))
        self.images = metrics.Counter("linnaeus_images", "images received", tag_keys=("endpoint",))


class ModelMetrics:
    def __init__(self):
        self.batch_size = metrics.Histogram("linnaeus_batch_size", "images per model batch",
                                            boundaries=BATCH_BOUNDARIES)
        self.cache_hits = metrics.Counter("linnaeus_label_cache_hits", "label embeddings found in the cache")
        self.cache_misses = metrics.Counter("linnaeus_label_cache_misses", "label embeddings computed")
        self.queue_depth = metrics.Gauge("linnaeus_queue_depth", "images waiting for a model batch")
