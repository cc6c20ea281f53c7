"""The model-only ceiling of a recipe: synthetic tensors through the same model, batch, precision,
compile and optimiser settings as the real run, on one device, without Ray or data.

Notable:
- Built by `linnaeus.train.build` like the Ray Train loop, and stepped by the same `TrainStep`, so the
  only difference from the real run is where the batch comes from.
- Timed between device synchronisations over `steps` steps after `warmup` steps (compilation and
  autotuning happen in the warmup); peak memory is the allocator's high-water mark over the run.
  FLOPs and MFU are added by the caller (`benchmark.add_flops`), the same way for every mode.
- The images are random; the text is real: captions drawn as the stream draws them from rows sampled
  across the corpus's shards (metadata columns only), tokenised and, with `data.cut_text`, cut the way
  the loader cuts them, so the text tower runs the lengths the real run runs. Without a readable corpus
  it falls back to random ids over the full context (and says so in `text_source`).
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
from linnaeus.config import TrainConfig
from linnaeus.data import shards
from linnaeus.fastclip import cut_tokens
from linnaeus.models import model_config, tokenizer
from linnaeus.taxonomy import RANKS, Taxon, TextSampler
from linnaeus.train import flops
from linnaeus.train.build import build_model, build_optimisation, compile_model
from linnaeus.train.loss import clip_loss
from linnaeus.train.step import TrainStep


log = logging.getLogger(__name__)
SAMPLE_SHARDS = 8


def corpus_tokens(cfg: TrainConfig, rows: int) -> np.ndarray:
    """Token ids [rows, L] of captions drawn from rows sampled across (up to 8 of) the corpus's shards."""
    root = storage.resolve(cfg.data.data, cfg.data.s3)
    manifest = shards.read_manifest(root)
    rng = np.random.default_rng(cfg.seed)
    picked = rng.permutation(len(manifest.shards))[:SAMPLE_SHARDS]
    tables = [pq.read_table(manifest.shard_location(root, manifest.shards[i]).path, filesystem=root.fs,
                            columns=["image_id", *RANKS, "common_name"]).to_pylist() for i in picked]
    table = [row for t in tables for row in t]
    if not table:
        raise shards.CorpusError(f"{root.uri}: the sampled shards hold no rows")
    table = [table[i] for i in rng.choice(len(table), size=rows, replace=len(table) < rows)]
    taxa = [Taxon(*(row[r] for r in RANKS), common_name=row["common_name"]) for row in table]
    sampler = TextSampler(cfg.data.text_types, cfg.data.mixing, cfg.data.seed)
    captions = [c for c in sampler.captions(taxa, [row["image_id"] for row in table]) if c]
    if not captions:
        raise shards.CorpusError(f"{root.uri}: no row of the sampled shards has a caption of the recipe's types")
    captions = (captions * (rows // len(captions) + 1))[:rows]
    tokens = tokenizer(cfg.data.model, cfg.data.context_length)(captions).numpy()
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
    optimizer, scheduler = build_optimisation(cfg, model, warmup + steps + 1)
    compile_model(cfg, model)
    step = TrainStep(model, clip_loss(), optimizer, scheduler, device, cfg.schedule.precision,
                     cfg.optim.grad_clip_norm)
    generator = torch.Generator().manual_seed(cfg.seed)
    size, b = cfg.data.image_size, cfg.schedule.batch_size
    text, source = synthetic_text(cfg, b, generator)
    micro = [{"image": torch.randn(b, 3, size, size, generator=generator).to(device), "text": text.to(device)}
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

