"""The quickstart (`make demo`): synthesise a corpus -> ingest it into shards -> train the demo recipe on
Ray Train -> export the model in open_clip's format -> evaluate it on taxa it never saw, next to the
random initialisation it started from.

Everything runs on this machine (local Ray, local folders) and lands under --output:
    raw/       the synthetic training images in the folder format (images/<taxon>/*.jpg + taxa.csv)
    heldout/   the held-out taxa, same format (never ingested, never trained on)
    corpus/    Parquet shards + _manifest.json + _report.json
    runs/      the training run: checkpoints, Ray Train's run state, and export/ (the open_clip model,
               metrics.csv/json, training_curve.png, summary.json)
    eval/      results.json, report.md, embedding_map.png (trained vs initialisation, held-out taxa)
    model/     the exported model again, with label_bank/ (all 40 taxa): what serve/config.yaml serves
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from linnaeus.config import IngestConfig, TrainConfig, load_yaml
from linnaeus.data.ingest import run_ingest
from linnaeus.data.loader import preview
from linnaeus.data.stream import build_stream
from linnaeus.data.synthetic import split_off, write_folder_corpus
from linnaeus.runtime import init_ray, setup_logging
from linnaeus.train.plan import plan_training

RECIPE = Path(__file__).resolve().parent / "configs" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="out/demo")
    p.add_argument("--taxa", type=int, default=40)
    p.add_argument("--heldout", type=int, default=8, help="taxa kept out of training, for evaluation")
    p.add_argument("--images", type=int, default=24, help="images per taxon")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of jobs/configs/demo.yaml (e.g. schedule.epochs=2)")
    args = p.parse_args(argv)
    setup_logging()
    out = Path(args.output).resolve()
    cfg = load_yaml(TrainConfig, RECIPE, [f"data.data={out / 'corpus'}",
                                          f"checkpoint.storage_path={out / 'runs'}", *args.overrides])
    print(f"[1/6] synthesising {args.taxa} taxa x {args.images} images -> {out / 'raw'}, holding "
          f"{args.heldout} taxa out -> {out / 'heldout'}")
    for folder in ("raw", "heldout"):
        shutil.rmtree(out / folder, ignore_errors=True)
    write_folder_corpus(out / "raw", args.taxa, args.images, args.seed, size=96)
    split_off(out / "raw", out / "heldout", args.heldout, args.seed)
    init_ray()
    print(f"[2/6] ingesting -> {out / 'corpus'}")
    result = run_ingest(IngestConfig(input=str(out / "raw"), format="folder",
                                     output=str(out / "corpus"), shard_rows=256))
    print(f"      {result.rows} rows, {result.taxa} taxa, {result.shards} shards, "
          f"{result.skipped} skipped in {result.seconds:.1f}s")
    print("[3/6] one training batch as the trainer gets it (captions as the tokenizer sees them)")
    for line in preview(build_stream(cfg.data).dataset.iterator(), cfg.data, batches=1, batch_size=5):
        print(line)
    plan = plan_training(cfg, recipe="demo")
    print(f"[4/6] training {RECIPE.name} on Ray Train, then exporting\n      " + "\n      ".join(plan.summary()))
    from linnaeus.train.trainer import run_training

    summary = run_training(plan)
    export = summary["export"]
    print(f"[5/6] evaluating on the {args.heldout} held-out taxa: the trained model vs its initialisation")
    table = evaluate_heldout(export, summary["run"], out)
    print(f"[6/6] publishing the model with a label bank of all {args.taxa} taxa -> {out / 'model'}")
    bank = publish_model(export, out)
    print(f"\ndone in {summary['wall_seconds']:.0f}s of training: {summary['steps']} steps, final loss "
          f"{summary['final_loss']:.3f}\n"
          f"  images     {out / 'raw'}\n"
          f"  corpus     {out / 'corpus'} (_manifest.json, _report.json)\n"
          f"  run        {summary['run']} (checkpoints; continue with jobs/train.py --resume)\n"
          f"  model      {export} (open_clip_config.json + open_clip_pytorch_model.bin)\n"
          f"  metrics    {export}/metrics.csv, {export}/training_curve.png, {export}/summary.json\n"
          f"  evaluation {out / 'eval'} (results.json, report.md, embedding_map.png)\n"
          f"  load it:   open_clip.create_model_and_transforms('local-dir:{export}')\n"
          f"  served     {out / 'model'} ({bank.taxa} taxa in label_bank/)\n"
          f"  serve it:  make serve   (= .venv/bin/serve run serve/config.yaml; then, in another shell:)\n"
          f"             curl -F images=@{_example_image(out)} -F rank=genus "
          f"http://127.0.0.1:8000/v1/taxonomy\n\n{table}")
    return 0


def publish_model(export: str, out: Path):
    """Copy the export to out/model (serve/config.yaml's default) and build its label bank from the
    training corpus and the held-out taxa, so the service can name taxa it never trained on."""
    from linnaeus.batch.label_bank import build_label_bank
    from linnaeus.batch.taxa import read_taxa
    from linnaeus.clip.exports import read_export
    from linnaeus.serving.bank import default_location

    model = out / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(export, model, ignore=lambda d, names: [n for n in names if not n.startswith("open_clip")])
    taxa = read_taxa([str(out / "corpus"), str(out / "heldout")])
    return build_label_bank(read_export(str(model)), taxa, default_location(str(model)), ["taxonomic_common"],
                            "openai")


def _example_image(out: Path) -> str:
    return os.path.relpath(sorted((out / "heldout" / "images").rglob("*.jpg"))[0])


def evaluate_heldout(export: str, run: str, out: Path) -> str:
    from linnaeus.config import EvalConfig
    from linnaeus.eval.report import markdown
    from linnaeus.eval.run import check_inputs, run_evaluation

    cfg = EvalConfig(model=export, compare=f"init:{run}", data=str(out / "heldout"), output=str(out / "eval"),
                     text_type="taxonomic", shots=[1, 5], map_rank="class")
    results, _ = run_evaluation(cfg, check_inputs(cfg))
    return markdown(results, cfg)


if __name__ == "__main__":
    sys.exit(main())
