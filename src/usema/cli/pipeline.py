"""The commands that make a trained run: `plan`, `train` and `demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usema.cli.options import add_device, add_plan_edits, count_from, key_json, positive_number
from usema.utils.text import counted

LABEL_MODES = ["semantic", "binary", "instance"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register plan, train and demo."""
    p = sub.add_parser("plan", help="fingerprint a dataset and write RUN/plans.json")
    p.add_argument("data", type=Path, help="the dataset folder (MSD, nnU-Net v2 raw, or images/ + labels/)")
    p.add_argument(
        "-o", "--output", type=Path, required=True,
        help="the run folder that receives plans.json (outside the dataset folder)",
    )
    p.add_argument(
        "--model", default="usema", help="the model preset to plan for (default: usema; see usema models)"
    )
    p.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default=None,
        help="what the label files hold (default: semantic; 2D folders are guessed)",
    )
    p.add_argument(
        "--memory-gb",
        type=positive_number,
        default=None,
        help="memory budget that sizes patch and batch (default: 5 GiB on a GPU, 2 GiB on a CPU)",
    )
    add_plan_edits(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the plans.json of a run folder that holds trained folds (they may no longer load)",
    )
    add_device(
        p,
        "train",
        "; the plan is made for that device, which need not be this machine (a GPU plan can be "
        "made on a CPU): for a CPU a compact network and a 30-minute budget, for a GPU the planner's full "
        "network; the training is timed only where the device is present",
    )
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("train", help="train a model (plans the dataset first if needed)")
    p.add_argument("data", type=Path, help="the dataset folder the run was (or will be) planned from")
    p.add_argument("-o", "--output", type=Path, required=True, help="the run folder (outside the dataset folder)")
    p.add_argument("--model", default=None, help="the model preset (default: the one plans.json names)")
    p.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default=None,
        help="what the label files hold (default: semantic; 2D folders are guessed)",
    )
    p.add_argument("--fold", type=count_from(0), default=0, help="the fold to train, 0 to FOLDS-1 (default: 0)")
    p.add_argument(
        "--folds", type=count_from(1), default=5, help="how many folds the cases are split into (default: 5)"
    )
    p.add_argument(
        "--groups", type=Path, default=None, help="CSV case_id,group: cases of a group stay in one fold"
    )
    p.add_argument("--epochs", type=count_from(1), default=None, help="epochs (default: the plan's)")
    p.add_argument(
        "--iters-per-epoch", type=count_from(1), default=None, help="optimizer steps per epoch (default: the plan's)"
    )
    p.add_argument(
        "--optimizer",
        choices=["sgd", "adamw"],
        default=None,
        help="the optimizer, with its default learning rate (default: the plan's)",
    )
    p.add_argument(
        "--schedule",
        choices=["poly", "cosine"],
        default=None,
        help="learning-rate decay (default: the plan's)",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (default: the plan's, whose own default is auto: the device's)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initialisation and the sampling (default: 0); it draws the run's split only when "
        "RUN/splits.json does not exist yet: every later fold, whatever its seed, keeps that split",
    )
    p.add_argument(
        "--max-minutes",
        type=positive_number,
        default=None,
        help="training time of the whole run, resumes included; the learning rate decays to 0 there "
        "(default: the plan's time_budget_minutes, else none)",
    )
    add_plan_edits(p, example="patch_size=[32,32] batch_size=8 lr=0.001")
    p.add_argument(
        "--num-workers",
        type=count_from(0),
        default=None,
        help="data loader processes that draw the augmented batches (default: half this machine's CPUs shared "
        "among the training processes on it, at most 8 each; 0: the training process draws them)",
    )
    p.add_argument(
        "--pretrained-weights",
        type=Path,
        default=None,
        metavar="CKPT",
        help="start from the tensors of this checkpoint whose names and shapes match (the others keep "
        "their initialisation; the report lists them); an nnU-Net checkpoint of a residual-encoder UNet "
        "(checkpoint_final.pth) is mapped onto USEMA's encoder and decoder by structure",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start from --pretrained-weights even when less than half of its tensors fit the network",
    )
    p.add_argument("--resume", action="store_true", help="continue the fold's run from its latest checkpoint")
    p.add_argument(
        "--overwrite", action="store_true", help="start over a fold (or run) that holds an earlier run"
    )
    add_device(p, "train")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="the main job on generated phantoms: plan, train, predict, evaluate")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("demo_run"),
        help="folder of the phantoms, the run and its results (default: demo_run)",
    )
    p.add_argument(
        "--report", type=Path, default=None, help="also write a Markdown summary with provenance here"
    )
    add_device(p)
    p.set_defaults(func=_cmd_demo)


def _planning_choices(args: argparse.Namespace) -> dict:
    """What `usema plan` and `usema train` both pass on to planning: the device, the model and the label mode."""
    return {"device": args.device, "model": args.model, "label_mode": args.labels}


def _cmd_plan(args: argparse.Namespace) -> int:
    import usema
    from usema.planning.device import describe_plan

    plans, estimate = usema.plan(
        args.data,
        args.output,
        memory_budget_gb=args.memory_gb,
        edits=key_json(args.plan, "--plan", "KEY"),
        overwrite=args.overwrite,
        **_planning_choices(args),
    )
    print(f"wrote {args.output / 'plans.json'}")
    for line in describe_plan(plans, estimate):
        print(line)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import usema

    summary = usema.train(  # raises Interrupted (exit 130 or 143) when a signal stopped it
        args.data,
        args.output,
        fold=args.fold,
        folds=args.folds,
        groups_csv=args.groups,
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        optimizer=args.optimizer,
        schedule=args.schedule,
        precision=args.precision,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        max_minutes=args.max_minutes,
        plan_edits=key_json(args.plan, "--plan", "KEY"),
        num_workers=args.num_workers,
        pretrained_weights=args.pretrained_weights,
        force_pretrained=args.force,
        **_planning_choices(args),
    )
    print(_trained_words(summary), file=sys.stderr)
    return 0


def _trained_words(summary: dict) -> str:
    """The line that ends `usema train`: what this call trained, the best validation and where it is."""
    fold, run = summary["fold"], summary["epochs_run"]
    done = (f"trained {counted(run, 'epoch')}, to epoch {summary['last_epoch']} of {summary['epochs']}"
            if run else f"already trained to epoch {summary['last_epoch']} of {summary['epochs']}, nothing to do")
    if summary["best_epoch"]:
        best = f"best validation Dice {summary['best_dice']:.4f} at epoch {summary['best_epoch']}"
        return f"fold {fold}: {done}; {best}: {summary['checkpoint_best']}"
    return f"fold {fold}: {done}; {summary['checkpoint_latest']}"


def _cmd_demo(args: argparse.Namespace) -> int:
    from usema.demo import run_demo

    run_demo(args.output, device=args.device, report=args.report)
    return 0
