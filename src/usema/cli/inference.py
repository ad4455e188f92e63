"""The commands that use a trained run: `predict`, `export` and `evaluate`."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from usema.cli.options import add_device, count_from, fold_name, positive_number

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register predict, export and evaluate."""
    p = sub.add_parser("predict", help="predict files or folders with a trained run")
    p.add_argument(
        "run",
        type=Path,
        help="the run folder (plans.json and fold_K/ checkpoints), or nnU-Net's results folder of a USEMA model "
        "(TRAINER__PLANS__CONFIGURATION: nnU-Net's predictor with the checkpoint_final.pth of fold_0 ... fold_K "
        "by default, as nnUNetv2_predict)",
    )
    p.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument(
        "-o", "--output", type=Path, required=True,
        help="the folder that receives the predictions (outside the inputs, datasets and runs)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--fold",
        type=fold_name,
        default=None,
        metavar="N|all",
        help="predict with fold N alone; 'all' is nnU-Net's fold_all, trained on every case (nnUNetv2_predict "
        "-f all), of an nnU-Net results folder",
    )
    which.add_argument(
        "--folds",
        nargs="+",
        default=None,
        metavar="N|all",
        help="predict with these folds as an ensemble (their softmax averaged, as nnU-Net), or 'all' of the "
        "trained numbered folds (default: all; for an nnU-Net results folder fold_0 ... fold_K, as "
        "nnUNetv2_predict's default, without fold_all: --fold all predicts with it alone)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        choices=["best", "latest"],
        help="each fold's best (highest validation Dice) or latest checkpoint (default: best, checkpoint_best.pt, "
        "for a usema run; latest, checkpoint_final.pth, for an nnU-Net results folder, as nnUNetv2_predict; "
        "best there is nnU-Net's checkpoint_best.pth)",
    )
    p.add_argument(
        "--step-size",
        type=float,
        default=0.5,
        help="distance between sliding windows as a fraction of the patch, as nnU-Net's step size "
        "(default: 0.5, half-overlapping windows; smaller is slower and smoother)",
    )
    mirroring = p.add_mutually_exclusive_group()
    mirroring.add_argument(
        "--disable-tta",
        action="store_true",
        help="no mirroring test-time augmentation (2^d times faster; it is on by default)",
    )
    mirroring.add_argument(
        "--tta",
        action="store_true",
        help="deprecated, does nothing and will be removed: mirroring is on by default",
    )
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write OUT/CASE.npz (key 'probabilities': classes x spatial in nnU-Net's axis order, on the "
        "image's grid), OUT/CASE.pkl (the image's properties) and OUT/dataset.json and plans.json, as nnU-Net "
        "does: nnUNetv2_ensemble combines such folders with nnU-Net's",
    )
    p.add_argument("--overlay", action="store_true", help="also write PNG overlays")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true",
        help="replace the files usema predict wrote earlier in the output folder (never a file it did not write)",
    )
    existing.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted prediction into the same output folder: cases whose outputs are all there "
        "are kept, the others predicted; refused when OUT/usema_predict.json names other settings",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="inference precision (default: the training precision where the device supports it)",
    )
    add_device(p, "predict")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "export",
        help="write one fold's network as ONNX or TorchScript, for use outside usema",
        description="Write one fold's network as ONNX or TorchScript, for use outside usema. USEMA and nnU-Net "
        "networks give files that take any batch and any spatial size (input (batch, channels, *spatial), "
        "output logits at that size), as the network does: the padding to the total stride and SEMA's windows "
        "(each stage keeps its window size, the number of windows follows the input) are computed in the "
        "graph. Other networks take patches of the plan's size only (ONNX: any batch; TorchScript: one "
        "patch). Images are prepared as the plan the model was trained with says (spacing, normalisation; "
        "the checkpoint holds it).",
    )
    p.add_argument("run", type=Path, help="the run folder")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="model.onnx (ONNX, input 'image', output 'logits'; dynamic batch and, for USEMA and nnU-Net, "
        "spatial axes) or model.pt (TorchScript)",
    )
    p.add_argument("--fold", type=count_from(0), default=0, help="the fold whose network is exported (default: 0)")
    p.add_argument(
        "--checkpoint",
        default="best",
        choices=["best", "latest"],
        help="the fold's best or latest checkpoint (default: best)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("pred", type=Path, help="a folder (or file) of predicted segmentations")
    p.add_argument("gt", type=Path, help="the folder (or file) of reference segmentations")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="folder of per_case.csv and summary.json, outside PRED and GT (default: PRED_evaluation beside PRED, "
        "named after it)",
    )
    p.add_argument(
        "--tolerance-mm",
        type=positive_number,
        nargs="+",
        default=None,
        help="NSD tolerance in the images' spacing units (mm; pixels for PNG/JPEG/TIFF), one or one per class "
        "(default: 1 mm in 3D, 2 pixels in 2D)",
    )
    p.add_argument("--instance", action="store_true", help="labels are instance ids: also score instance F1")
    p.add_argument(
        "--chill",
        action="store_true",
        help="score the predicted cases only (default: every reference case needs a prediction)",
    )
    p.add_argument(
        "--ignore-label",
        type=int,
        default=None,
        metavar="VALUE",
        help="reference voxels of this value are scored nowhere (default: the 'ignore' label of the "
        "dataset.json beside or above GT, as nnU-Net)",
    )
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        metavar="RUN",
        help="the run (or its plans.json) that made the predictions: score the classes in the dataset's label "
        "values under the plan's names",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_predict(args: argparse.Namespace) -> int:
    from usema.inference.predict_files import predict

    if args.tta:
        warnings.warn("--tta is deprecated and does nothing (mirroring is on by default; --disable-tta turns it "
                      "off); it will be removed", FutureWarning, stacklevel=1)

    predict(
        args.run,
        args.inputs,
        args.output,
        checkpoint=args.checkpoint,
        tta=not args.disable_tta,
        overlay=args.overlay,
        device=args.device,
        fold=args.fold,
        folds=args.folds,
        precision=args.precision,
        overwrite=args.overwrite,
        step_size=args.step_size,
        save_probabilities=args.save_probabilities,
        resume=args.resume,
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from usema.inference.export import export_run

    path, shape = export_run(
        args.run, args.output, fold=args.fold, checkpoint=args.checkpoint, overwrite=args.overwrite
    )
    if all(isinstance(size, str) for size in shape[2:]):
        takes = "any batch and any spatial size"
    else:
        takes = "any batch of patches" if shape[0] == "batch" else "one patch"
    print(
        f"wrote {path}: input 'image' of shape {list(shape)} ({takes}, prepared as the plan it was trained "
        "with says, which its checkpoint holds: spacing and normalisation), output 'logits' per class"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from usema.evaluation.evaluate_folder import evaluate

    evaluate(
        args.pred,
        args.gt,
        output=args.output,
        tolerance_mm=args.tolerance_mm,
        instance=args.instance,
        chill=args.chill,
        ignore_label=args.ignore_label,
        run=args.run,
    )
    return 0
