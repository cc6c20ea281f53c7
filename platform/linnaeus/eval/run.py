"""`jobs/evaluate.py`'s work: check inputs, embed with each model on Ray, measure, write the reports."""

from __future__ import annotations

from linnaeus import runtime, storage
from linnaeus.config import EvalConfig
from linnaeus.eval import report
from linnaeus.eval.embed import data_kind, embed_dataset
from linnaeus.eval.evaluate import evaluate
from linnaeus.eval.modelref import describe, load_model
from linnaeus.eval.texts import text_encoder


def check_inputs(cfg: EvalConfig) -> dict:
    """Fail before any cluster work: the data must be a corpus or a folder dataset, the models must
    build. Returns spec -> (model, arch) for the driver-side text features."""
    data_kind(storage.resolve(cfg.data, cfg.s3))
    return {spec: load_model(spec) for spec in filter(None, [cfg.model, cfg.compare])}


def run_evaluation(cfg: EvalConfig, models: dict) -> tuple[dict, storage.Location]:
    """One report column per model, and per text type when `compare_text_type` asks for a second."""
    with runtime.storage_retries() as retries:
        return _evaluate(cfg, models, retries)


def _evaluate(cfg: EvalConfig, models: dict, retries: runtime.StorageRetries) -> tuple[dict, storage.Location]:
    text_types = [cfg.text_type, *([cfg.compare_text_type] if cfg.compare_text_type else [])]
    results, pngs = {}, {}
    for spec, (model, arch) in models.items():
        model = model.eval()
        data = embed_dataset(cfg.data, spec, model.visual.preprocess_cfg, cfg.actors, cfg.batch_size, cfg.s3)
        texts = text_encoder(spec, arch)
        for text_type in text_types:
            label = describe(spec) if describe(spec) not in results else spec
            label += f" [{text_type.value}]" if len(text_types) > 1 else ""
            results[label], model_pngs = evaluate(model, arch, data, cfg.model_copy(update={"text_type": text_type}),
                                                  texts)
        suffix = "" if spec == cfg.model else "_compare"
        pngs.update({f"{name}{suffix}": png for name, png in model_pngs.items()})
    return results, report.write(results, pngs, cfg, retries.report())
