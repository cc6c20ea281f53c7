"""Build a label bank for a model: every taxon embedded by a pool of model actors, written as Parquet.

Notable:
- Taxa are planned on the driver (`linnaeus.batch.taxa`), embedded in batches by Ray Data actors (one
  GPU each when the cluster has GPUs) and written part by part; `_bank.json` is written last and
  carries the model's weight digest, so a Predictor refuses a bank made for other weights.
- Rebuilding into the same folder replaces the bank: the new parts are written to a staging prefix and
  swapped in only when all are written, so a failed build leaves the old bank as it was.
- Text: each taxon's name in each chosen text type through the templates, averaged
  (`linnaeus.serving.bank.taxa_embeddings`, the same code the tests check against zero-shot).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import ray

from linnaeus import storage
from linnaeus.clip.exports import Export, read_export
from linnaeus.serving.bank import META_NAME, taxa_embeddings, to_table, write_meta
from linnaeus.taxonomy import Taxon

TAXA_PER_BATCH = 512


@dataclass(frozen=True)
class BankSummary:
    output: str
    taxa: int
    dim: int
    seconds: float


def _swap_in(staging: storage.Location, out: storage.Location) -> None:
    """Replace the bank's parts with the staged ones. Until here a failed build leaves the old bank whole;
    from here the bank has no `_bank.json` (readers refuse it) until the new one is written."""
    storage.delete(out.join(META_NAME))
    for stale in storage.list_files(out):
        if stale.path.endswith(".parquet"):
            storage.delete(out.join(stale.base_name))
    for part in storage.list_files(staging):
        storage.move(staging.join(part.base_name), out.join(part.base_name))
    try:
        out.fs.delete_dir(staging.path)
    except OSError:
        pass  # an S3 "folder" with no objects left does not exist


class _EmbedTaxa:
    def __init__(self, model: str, text_types: list[str], templates: str, s3):
        import torch

        export = read_export(model, s3)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = export.build().to(self.device).eval()
        self.tokenizer = export.tokenizer()
        self.text_types, self.templates = text_types, templates

    def __call__(self, table: pa.Table) -> pa.Table:
        taxa = Taxon.from_columns(table.to_pydict())
        embeddings = taxa_embeddings(self.model, self.tokenizer, taxa, self.text_types, self.templates, self.device)
        return to_table(taxa, embeddings.numpy())


def build_label_bank(export: Export, taxa: list[Taxon], output: str, text_types: list[str], templates: str,
                     actors: int = 1, s3: storage.S3Options | None = None) -> BankSummary:
    """Embed `taxa` with the exported model (read once by the caller, for its digest) and write the bank
    to `output` (Ray must be up). The actors read the weights themselves."""
    start = time.perf_counter()
    out = storage.resolve(output, s3)
    storage.ensure_bucket(out)
    staging = out.join(f"_staging-{uuid.uuid4().hex[:12]}")
    gpus = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {}
    rows = pa.Table.from_pylist([t.as_dict() for t in taxa])
    ds = ray.data.from_arrow(rows).map_batches(
        _EmbedTaxa, fn_constructor_args=(export.uri, text_types, templates, s3), batch_size=TAXA_PER_BATCH,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.5 if not gpus else 1, **gpus)
    ds.write_parquet(staging.path, filesystem=out.fs)
    _swap_in(staging, out)
    dim = int(export.config["model_cfg"]["embed_dim"])
    write_meta(out, {"model": export.uri, "model_digest": export.digest, "arch": export.arch,
                     "text_types": list(text_types), "templates": templates, "taxa": len(taxa), "dim": dim})
    return BankSummary(out.uri, len(taxa), dim, time.perf_counter() - start)
