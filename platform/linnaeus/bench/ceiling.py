"""The model-only ceiling of a recipe: synthetic tensors through the same model, batch, precision,
compile and optimiser settings as the real run, on one device, without Ray or data.

Notable:
- Built by `linnaeus.train.build` like the Ray Train loop (model, objective, optimiser), and stepped by
  the same `TrainStep`, so the only difference from the real run is where the batch comes from.
- Timed between device synchronisations over `steps` steps after `warmup` steps (compilation and
  autotuning happen in the warmup); peak memory is the allocator's high-water mark over the run.
  FLOPs and MFU are added by the caller (`benchmark.add_flops`), the same way for every mode.
- The images (and any extra views the objective asks for) are random; the text is real: captions drawn
  as the stream draws them (the recipe's text source) from rows sampled across the corpus's shards
  (its columns only), tokenised by the text tower and, with `data.cut_text`, cut the way the loader cuts
  them, so the text tower runs the lengths the real run runs. Without a readable corpus it falls back
  to random ids over the full context (and says so in `text_source`).
- Plain torch, one process: a multi-GPU run's ceiling is this figure per GPU.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from linnaeus import storage
from linnaeus.bench import flops
from linnaeus.clip.fastclip import cut_tokens
from linnaeus.clip.models import model_config
from linnaeus.clip.text_towers import make_tower
from linnaeus.config import TrainConfig
from linnaeus.data import shards
from linnaeus.text import TextSampler, make_source
from linnaeus.train.build import build_model, build_objective, build_optimisation, compile_model
from linnaeus.train.step import TrainStep

log = logging.getLogger(__name__)
SAMPLE_SHARDS = 8


def corpus_tokens(cfg: TrainConfig, rows: int) -> np.ndarray:
    """Token ids [rows, L] of captions drawn from rows sampled across (up to 8 of) the corpus's shards."""
    root = storage.resolve(cfg.data.data, cfg.data.s3)
    manifest = shards.read_manifest(root)
    rng = np.random.default_rng(cfg.seed)
    picked = rng.permutation(len(manifest.shards))[:SAMPLE_SHARDS]
    source = make_source(cfg.data.text_source)
    columns = ["image_id", *(c for c in source.columns if c != "image_id")]
    tables = [pq.read_table(manifest.shard_location(root, manifest.shards[i]).path, filesystem=root.fs,
                            columns=columns).to_pylist() for i in picked]
    table = [row for t in tables for row in t]
    if not table:
        raise shards.CorpusError(f"{root.uri}: the sampled shards hold no rows")
    table = [table[i] for i in rng.choice(len(table), size=rows, replace=len(table) < rows)]
    sampler = TextSampler(source, cfg.data.text_types, cfg.data.mixing, cfg.data.seed)
    captions = [c for c in sampler.captions_of_rows({c: [row[c] for row in table] for c in source.columns},
                                                    [row["image_id"] for row in table]) if c]
    if not captions:
        raise shards.CorpusError(f"{root.uri}: no row of the sampled shards has a caption of the recipe's types")
    captions = (captions * (rows // len(captions) + 1))[:rows]
    tower = make_tower(cfg.data.text_tower.name, cfg.data.text_tower.params)
    tokens = tower.tokenizer(cfg.data.model, cfg.data.context_length)(captions).numpy()
    return cut_tokens(tokens) if cfg.data.cut_text else tokens


def synthetic_text(cfg: TrainConfig, rows: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """(token ids [rows, L], "corpus" or "random"): the corpus's captions when it can be read."""
    try:
        return torch.from_numpy(corpus_tokens(cfg, rows)), "corpus"
    except (shards.CorpusError, storage.StorageError, OSError, pa.ArrowException) as exc:
        log.warning("ceiling: random text over the full context (%s)", exc)
    vocab = model_config(cfg.model.arch)["text_cfg"].get("vocab_size", 49408)
    return torch.randint(1, vocab, (rows, cfg.data.context_length), generator=generator), "random"


def measure_ceiling(cfg: TrainConfig, device: torch.device, steps: int = 30, warmup: int = 10) -> dict:
    """Images/s, step time and peak memory of the recipe's training step on synthetic data."""
    model = build_model(cfg, device)
    objective = build_objective(cfg, model, device)
    optimizer, scheduler = build_optimisation(cfg, model, warmup + steps + 1)
    compile_model(cfg, model)
    step = TrainStep(model, objective, optimizer, scheduler, device, cfg.schedule.precision, cfg.optim.grad_clip_norm)
    generator = torch.Generator().manual_seed(cfg.seed)
    size, b = cfg.data.image_size, cfg.schedule.batch_size
    text, source = synthetic_text(cfg, b, generator)

    def pixels(side: int) -> torch.Tensor:
        return torch.randn(b, 3, side, side, generator=generator).to(device)

    micro = [{"image": pixels(size), "text": text.to(device),
              **{f"view_{v.name}": pixels(v.size) for v in cfg.data.views}}
             for _ in range(cfg.schedule.accumulation)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step(micro)
    flops.sync(device)
    warm = time.perf_counter()
    for _ in range(steps):
        result = step(micro)
    flops.sync(device)
    seconds = time.perf_counter() - warm
    images = steps * cfg.schedule.batch_size * cfg.schedule.accumulation
    out = {"images_per_s": images / seconds, "step_ms": 1000 * seconds / steps, "steps": steps,
           "warmup_steps": warmup, "warmup_s": warm - start, "final_loss": result.loss,
           "text_tokens": text.shape[1], "text_source": source}
    if device.type == "cuda":
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out

