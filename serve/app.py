"""The Ray Serve application: `build_app(args)` -> Ingress(FastAPI) -> ModelServer.

`serve run serve/config.yaml` and `serve deploy serve/config.yaml` call it with the YAML's `args`,
validated as `linnaeus.config.ServeArgs` before anything is deployed (a bad key fails naming it); the
args may name a YAML file of them (`config:`) and overrides (`set: [key.sub=value]`), as every job does.
The model replica asks for a GPU when the cluster has one (`model_gpus` overrides), a CPU otherwise.
Autoscaling and batching come from the args too (typed, validated); a `deployments:` entry in the YAML
overrides them the Ray Serve way, and `user_config` (batching) changes live without restarting replicas.
"""

from __future__ import annotations

import ray
from ray.serve import Application

from linnaeus.clip.exports import read_export_config
from linnaeus.config import load_serve_args
from serve.ingress import Ingress
from serve.model import ModelServer


def build_app(args: dict) -> Application:
    cfg = load_serve_args(dict(args))
    gpus = cfg.model_gpus
    if gpus is None:
        gpus = 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    preprocess = read_export_config(cfg.model, cfg.s3).get("preprocess_cfg") or None
    # Each deployment is bound to only what its constructor uses: Serve versions a deployment by its
    # constructor arguments, and a change of batching must reconfigure replicas, not restart them.
    model = ModelServer.options(
        ray_actor_options={"num_cpus": cfg.model_cpus, "num_gpus": gpus},
        autoscaling_config=cfg.model_autoscaling.model_dump(), user_config=cfg.batching.model_dump(),
    ).bind(cfg.model, cfg.bank, cfg.cache_size, cfg.s3, cfg.cuda_graphs, cfg.bank_retry_s)
    return Ingress.options(
        ray_actor_options={"num_cpus": cfg.ingress_cpus}, autoscaling_config=cfg.ingress_autoscaling.model_dump(),
    ).bind(cfg.limits, cfg.api_key_env, preprocess, model, cfg.api_key_file)
