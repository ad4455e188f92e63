"""The commands around the pipeline: `models`, `bench ...`, `analyze ...`, `nnunet-plans` and
`nnunet-install-trainer`."""

from __future__ import annotations

import argparse
from pathlib import Path

from usema.cli.options import (
    add_device,
    add_network_settings,
    add_plan_edits,
    count_from,
    json_object,
    key_json,
    network_settings,
    placement,
    warn_deprecated,
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register models, nnunet-plans, nnunet-install-trainer, bench and analyze."""
    p = sub.add_parser("models", help="list the model presets with parameter counts")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("nnunet-plans", help="turn nnU-Net v2 residual-encoder plans into plans that build USEMA")
    p.add_argument("plans", type=Path, help="an nnU-Net plans file, e.g. nnUNetResEncUNetMPlans.json")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="the new plans file (default: PLANS_NAME.json beside the input); its stem is the plans name")
    p.add_argument("--plans-name", default=None, help="default: the output's stem, else the input's name + _USEMA")
    p.add_argument("--placement", type=placement, default=None,
                   help="SEMA blocks per encoder stage: all, bottleneck, deepest-K, from-S, a count for every stage "
                        "(0: the conv-only control) or one count per stage, e.g. 0,0,1,1,1,1 (default: where "
                        "usema's own plans put them, usema.models.usema.DEFAULT_PLACEMENT)")
    p.add_argument("--attention", default="sema", help="the SEMA blocks' attention mode (default: sema)")
    p.add_argument("--window-size", type=count_from(1), default=None, help="default: 7 in 2D, 5 in 3D")
    p.add_argument("--head-dim", type=count_from(1), default=32, help="channels per attention head (default: 32)")
    p.set_defaults(func=_cmd_nnunet_plans)

    p = sub.add_parser("nnunet-install-trainer",
                       help="put nnUNetTrainerUSEMA into nnU-Net's trainer folder, where -tr finds it")
    p.add_argument("--folder", type=Path, default=None,
                   help="nnU-Net's nnunetv2/training/nnUNetTrainer (default: the installed nnU-Net's)")
    p.set_defaults(func=_cmd_nnunet_install_trainer)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    _add_attention(bench)
    _add_efficiency(bench)
    _add_loader(bench)
    _add_accuracy(bench)
    p = bench.add_parser("readme", help="copy the generated result files into the result pages (docs/results) "
                                       "and the summary into the README")
    p.add_argument("readme", type=Path, nargs="?", default=Path("README.md"),
                   help="the README to update, beside docs/results (default: README.md)")
    p.set_defaults(func=_cmd_bench_readme)

    analyze = sub.add_parser("analyze", help="analyses of trained models").add_subparsers(dest="analysis", required=True)
    p = analyze.add_parser("dispersion", help="how far attention weights are from uniform as the token count grows")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="trained runs (e.g. of usema and usema-full)")
    p.add_argument("inputs", type=Path, nargs="+", help="real images: files or folders")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/dispersion"),
                   help="folder of dispersion.csv, .md and .png (default: benchmarks/dispersion)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="crop sides; default 64-512 (2D), 16-40 (3D)")
    p.add_argument("--max-images", type=int, default=2, help="images read from the inputs (default: 2)")
    p.add_argument("--checkpoint", default="latest", choices=["best", "latest"],
                   help="which checkpoint of each run's fold 0 (default: latest)")
    p.add_argument("--seed", type=int, default=0, help="initialisation of the untrained copies")
    add_device(p)
    p.set_defaults(func=_cmd_analyze_dispersion)


def _add_attention(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("attention", help="time and memory of every attention mode over growing token grids")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/attention"),
                   help="folder of the CSV, report and plot (default: benchmarks/attention)")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[1, 2, 3], help="token grid dimensions")
    p.add_argument("--sizes-2d", type=int, nargs="+", default=None, help="grid sides in 2D")
    p.add_argument("--sizes-3d", type=int, nargs="+", default=None, help="grid sides in 3D")
    p.add_argument("--modes", nargs="+", default=None, help="attention modes (default: every mode)")
    p.add_argument("--channels", type=int, default=64, help="channels of the tokens (default: 64)")
    p.add_argument("--head-dim", type=int, default=32, help="channels per head (default: 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default: 3)")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per measurement before it is recorded as a time-out")
    p.add_argument("--memory-limit-gb", type=float, default=None, help="CPU memory cap per measurement")
    p.add_argument("--report-only", action="store_true",
                   help="re-render attention.md and attention.png from the CSV of a finished run")
    add_device(p)
    p.set_defaults(func=_cmd_bench_attention)


def _add_efficiency(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("efficiency", help="parameters, FLOPs, latency, training step and memory of every model")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/efficiency"),
                   help="folder of the CSV, report and plot (default: benchmarks/efficiency)")
    p.add_argument("--models", nargs="+", default=None, help="default: every preset")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3], help="2D, 3D or both")
    p.add_argument("--sizes-2d", nargs="+", default=None, metavar="SIZE",
                   help="sides (256) or shapes (256x384); default: 128 256 512 1024")
    p.add_argument("--sizes-3d", nargs="+", default=None, metavar="SIZE",
                   help="sides (96) or shapes (40x56x40); default: 32 64 96 128")
    add_network_settings(p, example="usema='{\"base_features\": 16, \"max_features\": 128, \"blocks_per_stage\": 1, "
                                    "\"head_dim\": 16}' (the compact CPU widths)")
    p.add_argument("--network", default=None, metavar="JSON",
                   help="deprecated: the same network settings for every model (use --network-settings)")
    p.add_argument("--placements", nargs="+", default=None, metavar="PLACEMENT",
                   help="time every SEMA preset once per placement of its SEMA blocks; rows usema@PLACEMENT")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2], help="batch sizes (default: 1 2)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="precisions (default: fp32 bf16)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default: 3)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per measurement")
    p.add_argument("--memory-limit-gb", type=float, default=None, help="CPU memory cap per measurement")
    add_device(p)
    p.set_defaults(func=_cmd_bench_efficiency)



def _add_loader(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("loader", help="loader samples/s with 0, 2 and N workers; training memory as the "
                                        "dataset grows")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/loader"),
                   help="folder of the CSV and report (default: benchmarks/loader)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/bench/loader"),
                   help="where the generated phantoms and runs go (made once, reused)")
    p.add_argument("--shape", default="192x192x160", help="phantom size, e.g. 192x192x160")
    p.add_argument("--cases", type=int, nargs="+", default=[4, 24], help="dataset sizes of the memory runs")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0, 2 and the planned count")
    p.add_argument("--batches", type=int, default=20, help="batches timed per worker count")
    p.add_argument("--iterations", type=int, default=24, help="training iterations of each memory run")
    p.add_argument("--patch-size", default=None, metavar="SIZE", help="e.g. 96x96x96 (default: planned)")
    p.set_defaults(func=_cmd_bench_loader)


def _add_accuracy(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("accuracy", help="train every model on the same cross-validation folds at equal steps, "
                                          "predict and score each fold's held-out cases")
    p.add_argument("--dataset", required=True,
                   help="hippocampus, dsb2018, kvasir_seg, chaos_mr_t2 (under --data-root), or a dataset folder")
    p.add_argument("--models", nargs="+", default=["usema"], help="presets to train (default: usema)")
    p.add_argument("--folds", type=int, nargs="+", default=list(range(5)),
                   help="folds of the 5-fold split to run (default: all); fold k trains with seed k")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per run, the same for every model (the protocol; verdicts)")
    length.add_argument("--budget", type=float, default=None,
                        help="training minutes per run instead of --steps (wall clock: reported without verdicts)")
    p.add_argument("--placements", nargs="+", default=None, metavar="PLACEMENT",
                   help="train every SEMA preset once per placement of its SEMA blocks (all, from-S, deepest-K, "
                        "bottleneck); rows are named usema@PLACEMENT")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="training precision of the shared plan (default: auto)")
    p.add_argument("--data-root", type=Path, default=None, help="folder holding the known datasets")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/cv"),
                   help="folder of the training runs (default: runs/cv)")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/cv"),
                   help="folder of the result files and report (default: benchmarks/cv)")
    add_plan_edits(p, example="patch_size=[32,32] batch_size=8 (shared by every model)")
    add_network_settings(p, example="nnunet='{\"blocks_per_stage\": 2}'", more=" (listed per model in the results)")
    p.add_argument("--model-overrides", nargs="*", default=[], metavar="MODEL=JSON",
                   help="deprecated spelling of --network-settings")
    p.add_argument("--also-infer", nargs="+", default=[], choices=["fp32", "bf16", "fp16"], metavar="PRECISION",
                   help="also predict and score the held-out fold in these precisions (extra columns)")
    p.add_argument("--tta", action="store_true",
                   help="score with mirroring test-time augmentation (default: off, the study scores the network "
                   "alone; usema predict mirrors by default)")
    p.add_argument("--allow-mixed-commits", action="store_true",
                   help="add runs trained at another git commit than the study's earlier runs")
    p.add_argument("--measure-step-cost", action="store_true",
                   help="only measure every model's training-step cost, interleaved in this process (run it on "
                        "an otherwise idle machine); controls more than 10%% cheaper then get equal-compute runs")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the report from the result files alone (no training)")
    add_device(p)
    p.set_defaults(func=_cmd_bench_accuracy)


def _cmd_models(args: argparse.Namespace) -> int:
    from usema.models.summary import print_model_table

    print_model_table()
    return 0


def _cmd_nnunet_install_trainer(args: argparse.Namespace) -> int:
    from usema.integrations.nnunet import install_trainer

    path = install_trainer(args.folder)
    print(f"wrote {path} (nnU-Net: -tr nnUNetTrainerUSEMA)")
    return 0


def _cmd_nnunet_plans(args: argparse.Namespace) -> int:
    from usema.integrations.nnunet import convert_plans
    from usema.models.usema import DEFAULT_PLACEMENT

    placement = DEFAULT_PLACEMENT if args.placement is None else args.placement
    path = convert_plans(args.plans, args.output, plans_name=args.plans_name, placement=placement,
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
    from usema.models import list_models

    per_model = network_settings(args.network_settings)
    if args.network:  # the old spelling: one set of settings for every model measured
        warn_deprecated("--network JSON", "--network-settings MODEL=JSON (one per model)")
        every = json_object(args.network, "--network")
        per_model = {model: {**every, **per_model.get(model, {})} for model in args.models or list_models()}
    run_efficiency_benchmark(
        args.output, models=args.models, dims=args.dims, sizes_2d=args.sizes_2d, sizes_3d=args.sizes_3d,
        batch_sizes=args.batch_sizes, precisions=args.precisions, repeats=args.repeats,
        time_limit_s=args.time_limit, memory_limit_gb=args.memory_limit_gb, device=args.device,
        network_settings=per_model, placements=args.placements,
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
    from usema.bench.accuracy import DATASETS, run_accuracy_benchmark
    from usema.bench.accuracy_report import ReportFiles, write_report
    from usema.bench.accuracy_summary import write_summary
    from usema.errors import UsemaError

    if args.report_only:
        name = args.dataset if args.dataset in DATASETS else Path(args.dataset).name  # no data needed
        print(f"wrote {write_report(ReportFiles(args.output, name))} and {write_summary(args.output)}")
        return 0
    per_model = network_settings(args.network_settings)
    if args.model_overrides:
        warn_deprecated("--model-overrides", "--network-settings")
        per_model = {**network_settings(args.model_overrides, "--model-overrides"), **per_model}
    if args.steps is None and args.budget is None and not args.measure_step_cost:
        raise UsemaError("give --steps N (equal steps, the protocol) or --budget MINUTES")
    run_accuracy_benchmark(
        args.dataset, args.models, folds=args.folds, budget_minutes=args.budget, steps=args.steps,
        placements=args.placements, output=args.output, runs_dir=args.runs_dir, data_root=args.data_root,
        precision=args.precision, device=args.device, plan_edits=key_json(args.plan, "--plan", "KEY"),
        also_infer=args.also_infer, tta=args.tta, network_settings=per_model,
        allow_mixed_commits=args.allow_mixed_commits, measure_steps=args.measure_step_cost,
    )
    return 0


def _cmd_bench_readme(args: argparse.Namespace) -> int:
    from usema.bench.readme import update_readme

    for page, path in update_readme(args.readme):
        print(f"updated {page} from {path}")
    return 0


def _cmd_analyze_dispersion(args: argparse.Namespace) -> int:
    from usema.analysis.dispersion import analyze_dispersion

    analyze_dispersion(args.runs, args.inputs, output=args.output, sizes=args.sizes, max_images=args.max_images,
                       checkpoint=args.checkpoint, device=args.device, seed=args.seed)
    print(f"wrote {args.output}/dispersion.csv, dispersion.md and dispersion.png")
    return 0
