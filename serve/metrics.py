"""The service's own Prometheus metrics (next to Ray Serve's `ray_serve_*`), via `ray.util.metrics`.

Ray exports them on each node's metrics port with a `ray_` prefix (`exported_names()`), e.g.
`ray_linnaeus_requests_total`; dashboards and alert rules should name those series.
Objects are created inside replicas (`Metrics()` in a deployment's constructor), never at import.
"""

from __future__ import annotations

from ray.util import metrics

LATENCY_BOUNDARIES = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]

KINDS = {"linnaeus_requests": "counter", "linnaeus_request_errors": "counter",
         "linnaeus_request_latency_s": "histogram", "linnaeus_images": "counter",
         "linnaeus_batch_size": "histogram", "linnaeus_label_cache_hits": "counter",
         "linnaeus_label_cache_misses": "counter", "linnaeus_queue_depth": "gauge"}
_SUFFIX = {"counter": "_total", "histogram": "_bucket", "gauge": ""}


def exported_names() -> set[str]:
    """The series Prometheus scrapes: `ray_` prefix, `_total` on counters, `_bucket` (and `_sum`,
    `_count`) on histograms."""
    return {f"ray_{name}{_SUFFIX[kind]}" for name, kind in KINDS.items()}


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
