"""usema: medical image segmentation with SEMA attention (window softmax + global mean).

The public face, one function per step of the pipeline, each what the `usema` command of the same name calls:

    import usema
    plans, estimate = usema.plan("DATA", "RUN")        # RUN/plans.json for this machine's device, timed
    summary = usema.train("DATA", "RUN", fold=0)         # RUN/fold_0/checkpoint_best.pt, ...
    usema.predict("RUN", ["IMAGES"], "PRED")             # every trained fold, mirroring TTA on
    scores = usema.evaluate("PRED", "LABELS", "SCORES")  # Dice, NSD, HD95 per case and class
    segmentation = usema.load("RUN").predict("image.nii.gz")   # in memory: a label map on the image's grid

Networks on their own: `usema.models` (`build_model`, `list_models`, `NetworkSpec`, `USEMA`) and `usema.nn`
(the SEMA operator and block); a trained fold's checkpoint: `usema.checkpoint.Checkpoint`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["evaluate", "load", "plan", "predict", "train"]

from usema.moved_modules import install as _install_moved_modules  # noqa: E402 (after the version, as it is read)

_install_moved_modules()  # old module paths warn and lead to the new ones for one release

if TYPE_CHECKING:  # torch is imported only when one of these runs, so `usema --version` stays quick
    from pathlib import Path

    from usema.inference.predictor import Predictor
    from usema.planning.plans import Plans


def plan(data: str | Path, run_dir: str | Path, estimate: bool = True, **options: Any) -> tuple[Plans, Any]:
    """Plan the dataset folder `data` into `run_dir/plans.json` for a device (`usema plan`); returns the plan
    and the training-time estimate (None when not timed). The one way to plan from Python: on a CPU the compact
    network and a 30-minute training budget, on a GPU the planner's choices. With `estimate`, the training is
    timed on this machine when the device is here (the trainer's own steps,
    `usema.training.timing.time_training`). `options` are `usema.planning.plan_for_device`'s: `device`
    ("auto", "cpu", "cuda", "cuda:N"), `model`, `label_mode`, `memory_budget_gb`, `plan_edits` (the `--plan
    KEY=JSON` edits, named as `usema.train` names them; `edits` is the planner's own name), `folds`,
    `overwrite` (plan a run folder again)."""
    from usema.errors import UsemaError
    from usema.planning import plan_for_device
    from usema.training.timing import time_training

    if "plan_edits" in options:
        if "edits" in options:
            raise UsemaError("give the plan edits once: plan_edits or edits, not both")
        options["edits"] = options.pop("plan_edits")

    return plan_for_device(data, run_dir, time_training=time_training if estimate else None, **options)


def train(data: str | Path, run_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train one fold on `data` into `run_dir` (`usema train`), planning first where RUN has no plan; returns
    a summary (best validation Dice, epochs, checkpoint paths). `options` are
    `usema.training.run_training.train`'s: `model`, `fold`, `folds`, `epochs`, `max_minutes`, `device`,
    `precision`, `seed`, `resume`, `overwrite`, `plan_edits`, `num_workers`, `pretrained_weights`, ...

    Ctrl-C (SIGINT) or SIGTERM saves checkpoint_latest and raises `usema.errors.Interrupted`, so that a script
    does not go on to predict with a half-trained fold; `resume=True` continues it."""
    from usema.training.run_training import stop_if_interrupted
    from usema.training.run_training import train as train_fold

    summary = train_fold(data, run_dir, **options)
    stop_if_interrupted(summary)
    return summary


def predict(run_dir: str | Path, inputs: Any, output: str | Path, **options: Any) -> list[Path]:
    """Segment the images of `inputs` (files or folders) with the run in `run_dir`, writing one prediction per
    image into `output` in the image's format and geometry (`usema predict`); returns their paths. `options`
    are `usema.inference.predict_files.predict`'s: `fold`, `folds`, `checkpoint`, `tta`, `step_size`,
    `device`, `precision`, `save_probabilities`, `overlay`, `overwrite`, `resume` (keep the cases an earlier
    call finished with the same settings)."""
    from usema.inference.predict_files import predict as predict_run

    return predict_run(run_dir, inputs, output, **options)


def evaluate(pred: str | Path, gt: str | Path, output: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Score the predictions in `pred` against the references in `gt` (`usema evaluate`), writing
    `per_case.csv` and `summary.json` to `output` (default: PRED_evaluation beside PRED); returns the summary.
    `options` are `usema.evaluation.evaluate_folder.evaluate`'s: `tolerance_mm`, `instance`, `labels`, `chill`,
    `ignore_label`, `run` (a run folder whose plan names the classes)."""
    from usema.evaluation.evaluate_folder import evaluate as evaluate_predictions

    return evaluate_predictions(pred, gt, output, **options)


def load(run_dir: str | Path, **options: Any) -> Predictor:
    """A predictor ready to segment with the run in `run_dir`: `.predict(image)` returns the label map of an
    image file or array on the image's own grid. `options` are `usema.inference.predictor.load_predictor`'s:
    `fold` or `folds` (default: every trained fold), `checkpoint` ("best" or "latest"), `device`, `precision`,
    `tta` (default True), `step_size` (default 0.5)."""
    from usema.inference.predictor import load_predictor

    return load_predictor(run_dir, **options)
