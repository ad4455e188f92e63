"""Export a trained network for deployment outside usema: TorchScript and ONNX, both written atomically."""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from usema.data.io import atomic_path


def _in_eval_mode(model: nn.Module, export: Callable[[], None]) -> None:
    """Run `export` with the model in eval mode (dropout off, norms frozen), then restore its training flag."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            export()
    finally:
        model.train(was_training)


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Trace `model` on `example` (N, C, *spatial) and save it as TorchScript at `path` (load: torch.jit.load).

    Tracing records the operations run for `example`; shape arithmetic done in Python (window padding, for
    instance) is fixed to the example's spatial size, so export with the size you will run (the plan's patch
    size suits a sliding-window deployment). The model's training flag is restored afterwards.
    """
    path = Path(path)

    def trace() -> None:
        with warnings.catch_warnings():
            # torch>=2.9 marks torch.jit as deprecated; TorchScript stays the format libtorch (C++) loads,
            # which is why this function exists, so the warning would only be noise here. Tracer warnings
            # say that Python shape arithmetic is frozen to the example, which the docstring states.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example)
            with atomic_path(path) as tmp:
                torch.jit.save(traced, str(tmp))

    _in_eval_mode(model, trace)
    return path


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 18) -> Path:
    """Export `model` to ONNX at `path` with input "image" and output "logits", opset `opset`.

    Uses the torch.export-based (dynamo) exporter where torch and onnxscript provide it, else the TorchScript
    one. The batch axis is dynamic (any number of patches per call); the spatial axes are the example's: the
    SEMA window partition of each stage depends on its map size, and so do the padding and masks the graph
    holds. Weights are stored inside the one file (no external-data side file that the atomic rename would
    orphan), which limits the model to ONNX's 2 GB protobuf size; usema's networks are far below it.
    """
    path = Path(path)
    accepted = inspect.signature(torch.onnx.export).parameters
    kwargs: dict = {
        "input_names": ["image"],
        "output_names": ["logits"],
        "opset_version": opset,
        "verbose": False,
    }
    # torch>=2.5 chooses the exporter with this flag; older torch has only the TorchScript one.
    if "dynamo" in accepted:
        kwargs["dynamo"] = importlib.util.find_spec("onnxscript") is not None
    if kwargs.get("dynamo") and "external_data" in accepted:
        kwargs["external_data"] = False
    if kwargs.get("dynamo"):
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
        # an example of one would fix the batch: torch.export takes sizes 0 and 1 for constants
        example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
    else:
        kwargs["dynamic_axes"] = {"image": {0: "batch"}, "logits": {0: "batch"}}

    def export() -> None:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # The TorchScript exporter warns that it is legacy; when used it is the fallback chosen on purpose.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(tmp), **kwargs)

    _in_eval_mode(model, export)
    return path


def check_export_target(output: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse an export over an existing file (unless `overwrite`) and any export into a fold folder of the
    run, whose checkpoints a model.pt could replace (predict would then find an unreadable checkpoint)."""
    from usema.data.datasets import is_within
    from usema.errors import UsemaError

    for fold_dir in Path(run_dir).glob("fold_*"):
        if is_within(output, fold_dir):
            raise UsemaError(
                f"{output}: lies in the run's fold folder {fold_dir}, which holds its checkpoints; "
                "export to a file outside the fold folders"
            )
    if output.is_dir():
        raise UsemaError(f"{output}: is a folder; give the exported file's name (model.onnx or model.pt)")
    if output.exists() and not overwrite:
        raise UsemaError(f"{output}: exists already; give --overwrite to replace it, or another name")


def export_run(
    run_dir: str | Path,
    output: str | Path,
    fold: int = 0,
    checkpoint: str = "best",
    opset: int = 18,
    overwrite: bool = False,
) -> tuple[Path, tuple[int, ...]]:
    """Export fold `fold`'s `checkpoint` of a trained run to `output`: ONNX for a .onnx name, TorchScript for
    a .pt one.

    The network is exported for patches, (batch, channels, *patch_size), as the sliding window feeds it, in
    fp32 on the CPU (ONNX: any batch; TorchScript: traced with one patch); it takes images prepared as
    RUN/plans.json says (spacing, normalisation) and returns logits (batch, classes, *patch_size). Returns the path and the input shape. An existing `output` is
    replaced only with `overwrite`; outputs inside the run's fold folders are refused (`check_export_target`).
    """
    from usema.errors import UsemaError
    from usema.inference.predictor import load_predictor

    output = Path(output)
    writers = {
        ".onnx": lambda model, example: export_onnx(model, example, output, opset=opset),
        ".pt": lambda model, example: export_torchscript(model, example, output),
    }
    writer = writers.get(output.suffix.lower())
    if writer is None:
        raise UsemaError(
            f"{output}: export writes .onnx (ONNX) or .pt (TorchScript) files, not {output.suffix!r}"
        )
    check_export_target(output, Path(run_dir), overwrite)
    predictor = load_predictor(
        run_dir, checkpoint=checkpoint, fold=fold, device="cpu", precision="fp32", tta=False
    )
    plans = predictor.plans
    shape = (1, plans.dataset.num_channels, *plans.patch_size)
    writer(predictor.model, torch.zeros(shape))
    return output, shape
