"""`usema demo`: the whole pipeline on generated phantoms, no download needed.

Generates a small 3D phantom dataset, plans it for a compact USEMA, trains it for a fixed number of steps (so
that the result does not depend on the machine or its load), predicts the held-out fold, evaluates it and says
where everything is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from usema.checkpoint import checkpoint_path
from usema.data.layouts import load_dataset
from usema.data.phantoms import make_phantom_dataset
from usema.evaluation.evaluate_folder import evaluate
from usema.inference.predict_files import predict
from usema.planning import PLANS_NAME
from usema.planning.planner import plan_dataset
from usema.training.run_training import stop_if_interrupted, train
from usema.training.splits import load_or_create_splits

# A compact USEMA: the preset's network (residual conv stages, SEMA blocks where the preset places them),
# narrower and with one conv block a stage. A fixed number of steps, not a wall-clock budget, so that every
# machine trains the same recipe.
DEMO_MODEL = {"base_features": 16, "max_features": 128, "blocks_per_stage": 1, "head_dim": 16}
DEMO_TRAINING = {"optimizer": "adamw", "lr": 3e-3, "iters_per_epoch": 50, "epochs": 6, "patch_size": [32, 32, 32],
                 "batch_size": 4}


def _link_labels(label_files: list[Path], folder: Path) -> Path:
    """A folder of links to the held-out reference labels, for the evaluator (nothing is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for label in label_files:
        link = folder / label.name
        if not link.exists():
            os.symlink(label.resolve(), link)
    return folder


def run_demo(output: str | Path = "demo_run", device: str = "auto", seed: int = 0,
             report: str | Path | None = None) -> dict[str, Any]:
    """Run the demo into `output`; returns the evaluation summary. A rerun continues the training where it
    stopped (or finds it finished) and predicts again.

    `report`, if given, receives a Markdown summary (scores, wall time, command and machine).
    """
    started = time.monotonic()
    output = Path(output)
    data = make_phantom_dataset(output / "phantoms", spatial_dims=3, num_cases=24, seed=seed)
    run = output / "run"
    if not (run / PLANS_NAME).is_file():
        training = dict(DEMO_TRAINING)
        plan_dataset(data, run, model="usema", device=device, network_settings=DEMO_MODEL,
                     patch_size=training.pop("patch_size"), batch_size=training.pop("batch_size"), **training)
    steps = DEMO_TRAINING["epochs"] * DEMO_TRAINING["iters_per_epoch"]
    print(f"training a compact USEMA on {data} for {steps} steps", flush=True)
    resume = checkpoint_path(run, "latest", fold=0).is_file()
    summary = train(data, run, fold=0, folds=5, device=device, seed=seed, resume=resume)
    stop_if_interrupted(summary)

    spec = load_dataset(data)
    held_out = load_or_create_splits(run, [c.case_id for c in spec.cases], 5, seed)[0]["val"]
    cases = [spec.case(case_id) for case_id in held_out]
    predictions = output / "predictions"
    predict(run, [image for case in cases for image in case.images], predictions, checkpoint="best",
            overlay=True, device=device, overwrite=True)
    references = _link_labels([case.label for case in cases], output / "reference_labels")
    scores = evaluate(predictions, references, output=output / "evaluation", labels=spec.labels)

    dice = {stats["name"]: round(stats["dice"]["mean"], 3) for stats in scores["classes"].values()}
    print()
    print(f"held-out Dice per class: {json.dumps(dice)}")
    print(f"mean Dice: {scores['mean']['dice']:.3f} after {summary.get('epochs_run', '?')} epochs")
    print(f"curves:      {run / 'fold_0' / 'progress.png'}")
    print(f"overlays:    {predictions / 'overlays'}")
    print(f"scores:      {output / 'evaluation' / 'summary.json'}")
    if report is not None:
        _write_report(Path(report), scores, summary, time.monotonic() - started, device)
    return scores


def _write_report(path: Path, scores: dict, summary: dict, seconds: float, device: str) -> None:
    from usema.utils.atomic import atomic_write_text
    from usema.utils.device import resolve_device
    from usema.utils.provenance import provenance, provenance_markdown

    lines = ["# Demo on generated phantoms", "", provenance_markdown(provenance(resolve_device(device))), "",
             f"Whole demo (phantoms, plan, training, prediction, evaluation): {seconds / 60:.1f} min; "
             f"{summary.get('epochs_run', '?')} epochs of training; {scores['num_cases']} held-out cases.", "",
             "| class | Dice | NSD | HD95 |", "|---|---|---|---|"]
    for entry in scores["classes"].values():
        lines.append(f"| {entry['name']} | {entry['dice']['mean']:.3f} | {entry['nsd']['mean']:.3f} | "
                     f"{entry['hd95']['mean']:.2f} |")
    lines.append(f"| mean | {scores['mean']['dice']:.3f} | {scores['mean']['nsd']:.3f} | {scores['mean']['hd95']:.2f} |")
    atomic_write_text(path, "\n".join(lines) + "\n")
