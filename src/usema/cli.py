"""The `usema` command: argument parsing only; every subcommand is one call into the Python API."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")


def _placement(text: str) -> str | int | list[int]:
    """A placement as typed: counts ("0", "0,0,1,1") become numbers, a name stays a name."""
    counts = [part.strip() for part in text.split(",")]
    if all(count.isdigit() for count in counts):
        return int(counts[0]) if len(counts) == 1 else [int(count) for count in counts]
    return text.strip()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usema", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model presets with parameter counts")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("plan", help="fingerprint a dataset and write RUN/plans.json")
    p.add_argument("data", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", default="usema")
    p.add_argument("--labels", choices=["semantic", "binary", "instance"], default=None)
    p.add_argument("--memory-gb", type=float, default=None, help="memory budget that sizes patch and batch")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("train", help="train a model (plans the dataset first if needed)")
    p.add_argument("data", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--labels", choices=["semantic", "binary", "instance"], default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--groups", type=Path, default=None, help="CSV case_id,group: cases of a group stay in one fold")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--iters-per-epoch", type=int, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None)
    p.add_argument("--schedule", choices=["poly", "cosine"], default=None)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the fold's run from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over a fold (or run) that holds an earlier run")
    _add_device(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict files or folders with a trained run")
    p.add_argument("run", type=Path)
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--overlay", action="store_true", help="also write PNG overlays")
    p.add_argument("--overwrite", action="store_true", help="replace predictions already in the output folder")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="inference precision (default: the training precision where the device supports it)")
    _add_device(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("pred", type=Path)
    p.add_argument("gt", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None)
    p.add_argument("--tolerance-mm", type=float, nargs="+", default=None, help="NSD tolerance, one or one per class")
    p.add_argument("--instance", action="store_true", help="labels are instance ids: also score instance F1")
    p.add_argument("--chill", action="store_true",
                   help="score the predicted cases only (default: every reference case needs a prediction)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="the main job on generated phantoms: plan, train, predict, evaluate")
    p.add_argument("-o", "--output", type=Path, default=Path("demo_run"))
    p.add_argument("--report", type=Path, default=None, help="also write a Markdown summary with provenance here")
    _add_device(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("nnunet-plans", help="turn nnU-Net v2 residual-encoder plans into plans that build USEMA")
    p.add_argument("plans", type=Path, help="an nnU-Net plans file, e.g. nnUNetResEncUNetMPlans.json")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="the new plans file (default: PLANS_NAME.json beside the input); its stem is the plans name")
    p.add_argument("--plans-name", default=None, help="default: the output's stem, else the input's name + _USEMA")
    p.add_argument("--placement", type=_placement, default="all",
                   help="SEMA blocks per encoder stage: all, bottleneck, deepest-K, from-S, a count for every stage "
                        "(0: the conv-only control) or one count per stage, e.g. 0,0,1,1,1,1 (default: all)")
    p.add_argument("--attention", default="sema", help="the SEMA blocks' attention mode (default: sema)")
    p.add_argument("--window-size", type=int, default=None, help="default: 7 in 2D, 5 in 3D")
    p.add_argument("--head-dim", type=int, default=32)
    p.set_defaults(func=_cmd_nnunet_plans)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("attention", help="time and memory of every attention mode over growing token grids")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/attention"))
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[1, 2, 3])
    p.add_argument("--sizes-2d", type=int, nargs="+", default=None)
    p.add_argument("--sizes-3d", type=int, nargs="+", default=None)
    p.add_argument("--modes", nargs="+", default=None)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per measurement before it is recorded as a time-out")
    p.add_argument("--memory-limit-gb", type=float, default=None, help="CPU memory cap per measurement")
    p.add_argument("--report-only", action="store_true",
                   help="re-render attention.md and attention.png from the CSV of a finished run")
    _add_device(p)
    p.set_defaults(func=_cmd_bench_attention)

    p = bench.add_parser("efficiency", help="parameters, FLOPs, latency, training step and memory of every model")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/efficiency"))
    p.add_argument("--models", nargs="+", default=None, help="default: every preset")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    p.add_argument("--sizes-2d", nargs="+", default=None, metavar="SIZE",
                   help="sides (256) or shapes (256x384); default: 128 256 512 1024")
    p.add_argument("--sizes-3d", nargs="+", default=None, metavar="SIZE",
                   help="sides (96) or shapes (40x56x40); default: 32 64 96 128")
    p.add_argument("--network", default=None, metavar="JSON",
                   help="network settings for every model, e.g. the compact CPU widths "
                        "'{\"base_features\": 16, \"max_features\": 128, \"blocks_per_stage\": 1, \"head_dim\": 16}'")
    p.add_argument("--placements", nargs="+", default=None, metavar="PLACEMENT",
                   help="time every SEMA preset once per placement of its SEMA blocks; rows usema@PLACEMENT")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per measurement")
    p.add_argument("--memory-limit-gb", type=float, default=None)
    _add_device(p)
    p.set_defaults(func=_cmd_bench_efficiency)

    p = bench.add_parser("loader", help="loader samples/s with 0, 2 and N workers; training memory as the "
                                        "dataset grows")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/loader"))
    p.add_argument("--work-dir", type=Path, default=Path("runs/bench/loader"),
                   help="where the generated phantoms and runs go (made once, reused)")
    p.add_argument("--shape", default="192x192x160", help="phantom size, e.g. 192x192x160")
    p.add_argument("--cases", type=int, nargs="+", default=[4, 24], help="dataset sizes of the memory runs")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0, 2 and the planned count")
    p.add_argument("--batches", type=int, default=20, help="batches timed per worker count")
    p.add_argument("--iterations", type=int, default=24, help="training iterations of each memory run")
    p.add_argument("--patch-size", default=None, metavar="SIZE", help="e.g. 96x96x96 (default: planned)")
    p.set_defaults(func=_cmd_bench_loader)

    p = bench.add_parser("accuracy", help="train every model with one protocol, predict and score the held-out fold")
    p.add_argument("--dataset", required=True, help="hippocampus, dsb2018, or a dataset folder")
    p.add_argument("--models", nargs="+", default=["usema"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=float, default=15.0, help="training minutes per model and seed")
    p.add_argument("--steps", type=int, default=None,
                   help="train every model for this many optimizer steps instead of --budget minutes")
    p.add_argument("--placements", nargs="+", default=None, metavar="PLACEMENT",
                   help="train every SEMA preset once per placement of its SEMA blocks (all, from-S, deepest-K, "
                        "bottleneck); rows are named usema@PLACEMENT")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--data-root", type=Path, default=None, help="folder holding the known datasets")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--plan", nargs="*", default=[], metavar="KEY=JSON",
                   help="plan settings shared by every model, e.g. patch_size=[32,32] batch_size=8")
    p.add_argument("--model-overrides", nargs="*", default=[], metavar="MODEL=JSON",
                   help="network settings for one model only, e.g. usema='{\"sema_per_stage\": [0, 1, 1, 1]}' "
                        "(listed per model in the results)")
    p.add_argument("--also-infer", nargs="+", default=[], choices=["fp32", "bf16", "fp16"], metavar="PRECISION",
                   help="also predict and score the held-out fold in these precisions (extra columns)")
    p.add_argument("--tta", action="store_true", help="score with mirroring test-time augmentation")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (e.g. 1 to run two benchmarks side by side on two cores)")
    _add_device(p)
    p.set_defaults(func=_cmd_bench_accuracy)

    p = bench.add_parser("readme", help="copy the generated result files into the README's generated blocks")
    p.add_argument("readme", type=Path, nargs="?", default=Path("README.md"))
    p.set_defaults(func=_cmd_bench_readme)

    analyze = sub.add_parser("analyze", help="analyses of trained models").add_subparsers(dest="analysis", required=True)
    p = analyze.add_parser("dispersion", help="how far attention weights are from uniform as the token count grows")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="trained runs (e.g. of usema and usema-full)")
    p.add_argument("inputs", type=Path, nargs="+", help="real images: files or folders")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/dispersion"))
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="crop sides; default 64-512 (2D), 16-40 (3D)")
    p.add_argument("--max-images", type=int, default=2)
    p.add_argument("--checkpoint", default="latest", choices=["best", "latest"])
    p.add_argument("--seed", type=int, default=0, help="initialisation of the untrained copies")
    _add_device(p)
    p.set_defaults(func=_cmd_analyze_dispersion)
    return parser


def _json_value(text: str, flag: str) -> object:
    import json

    from usema.errors import UsemaError

    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsemaError(f"{flag} {text!r}: not JSON ({err})") from err


def _json_object(text: str, flag: str) -> dict:
    from usema.errors import UsemaError

    value = _json_value(text, flag)
    if not isinstance(value, dict):
        raise UsemaError(f"{flag}: expected a JSON object of settings, got {value!r}")
    return value


def _key_json(items: list[str], flag: str, want: str) -> dict:
    """KEY=JSON items as a dict."""
    from usema.errors import UsemaError

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsemaError(f"{flag} {item!r}: expected {want}=JSON")
        parsed[key] = _json_value(value, f"{flag} {key}")
    return parsed


def _cmd_models(args: argparse.Namespace) -> int:
    from usema.models.summary import print_model_table

    print_model_table()
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from usema.planning import plan_dataset

    plan_dataset(args.data, args.output, model=args.model, label_mode=args.labels, memory_budget_gb=args.memory_gb)
    print(f"wrote {args.output / 'plans.json'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from usema.training.api import stop_if_interrupted, train

    summary = train(
        args.data, args.output, model=args.model, label_mode=args.labels, fold=args.fold, folds=args.folds,
        groups_csv=args.groups, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
        optimizer=args.optimizer, schedule=args.schedule, device=args.device, precision=args.precision,
        seed=args.seed, resume=args.resume, overwrite=args.overwrite,
    )
    stop_if_interrupted(summary)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from usema.inference.api import predict

    predict(args.run, args.inputs, args.output, checkpoint=args.checkpoint, tta=args.tta, overlay=args.overlay,
            device=args.device, precision=args.precision, overwrite=args.overwrite)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from usema.evaluation.api import evaluate

    evaluate(args.pred, args.gt, output=args.output, tolerance_mm=args.tolerance_mm, instance=args.instance,
             chill=args.chill)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from usema.demo import run_demo

    run_demo(args.output, device=args.device, report=args.report)
    return 0


def _cmd_nnunet_plans(args: argparse.Namespace) -> int:
    from usema.integrations.nnunet import convert_plans

    path = convert_plans(args.plans, args.output, plans_name=args.plans_name, placement=args.placement,
                         attention=args.attention, window_size=args.window_size, head_dim=args.head_dim)
    print(f"wrote {path} (nnU-Net: -p {path.stem})")
    return 0


def _cmd_bench_attention(args: argparse.Namespace) -> int:
    from usema.bench.attention import render_attention_report, run_attention_benchmark

    if args.report_only:
        print(f"wrote {render_attention_report(args.output)}")
        return 0
    run_attention_benchmark(
        args.output, dims=args.dims, sizes_2d=args.sizes_2d, sizes_3d=args.sizes_3d, modes=args.modes,
        channels=args.channels, head_dim=args.head_dim, repeats=args.repeats, time_limit_s=args.time_limit,
        memory_limit_gb=args.memory_limit_gb, device=args.device,
    )
    return 0


def _cmd_bench_efficiency(args: argparse.Namespace) -> int:
    from usema.bench.efficiency import run_efficiency_benchmark

    run_efficiency_benchmark(
        args.output, models=args.models, dims=args.dims, sizes_2d=args.sizes_2d, sizes_3d=args.sizes_3d,
        batch_sizes=args.batch_sizes, precisions=args.precisions, repeats=args.repeats,
        time_limit_s=args.time_limit, memory_limit_gb=args.memory_limit_gb, device=args.device,
        network=_json_object(args.network, "--network") if args.network else None, placements=args.placements,
    )
    return 0


def _cmd_bench_loader(args: argparse.Namespace) -> int:
    from usema.bench.efficiency import parse_size
    from usema.bench.loader import run_loader_benchmark

    run_loader_benchmark(
        args.output, args.work_dir, shape=parse_size(args.shape, 3), cases=args.cases, workers=args.workers,
        batches=args.batches, iterations=args.iterations,
        patch_size=parse_size(args.patch_size, 3) if args.patch_size else None,
    )
    return 0


def _cmd_bench_accuracy(args: argparse.Namespace) -> int:
    from usema.bench.accuracy import run_accuracy_benchmark
    from usema.errors import UsemaError

    if args.threads is not None:
        if args.threads < 1:
            raise UsemaError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    per_model = _key_json(args.model_overrides, "--model-overrides", "MODEL")
    for model, value in per_model.items():
        if not isinstance(value, dict):
            raise UsemaError(f"--model-overrides {model}: expected a JSON object of network settings, got {value!r}")
    run_accuracy_benchmark(
        args.dataset, args.models, seeds=args.seeds, budget_minutes=args.budget, steps=args.steps,
        placements=args.placements, output=args.output,
        runs_dir=args.runs_dir, data_root=args.data_root, precision=args.precision, device=args.device,
        plan_edits=_key_json(args.plan, "--plan", "KEY"), also_infer=args.also_infer, tta=args.tta,
        network_settings=per_model,
    )
    return 0


def _cmd_bench_readme(args: argparse.Namespace) -> int:
    from usema.bench.readme import update_readme

    for path in update_readme(args.readme):
        print(f"updated {args.readme} from {path}")
    return 0


def _cmd_analyze_dispersion(args: argparse.Namespace) -> int:
    from usema.analysis.dispersion import analyze_dispersion

    analyze_dispersion(args.runs, args.inputs, output=args.output, sizes=args.sizes, max_images=args.max_images,
                       checkpoint=args.checkpoint, device=args.device, seed=args.seed)
    print(f"wrote {args.output}/dispersion.csv, dispersion.md and dispersion.png")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, `usema: warning: ...`, without the Python source line that raised it."""
    print(f"usema: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `usema` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _build_parser().parse_args(argv)
    from usema.errors import Interrupted, UsemaError
    from usema.utils.provenance import set_cli_argv

    set_cli_argv(argv)

    try:
        with warnings.catch_warnings():  # restores the caller's way of showing warnings afterwards
            warnings.showwarning = _show_warning
            return args.func(args)
    except UsemaError as err:
        # A user error (bad file, bad plan, wrong checkpoint): one clear line, no traceback.
        print(f"usema {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        # Saved and stopped: a non-zero code, so that a following `&& usema predict` does not run.
        print(f"usema {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
