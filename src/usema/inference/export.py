"""Export a trained network for deployment outside usema: TorchScript and ONNX, both written atomically.

Networks that declare `exports_any_size` (USEMA with SEMA blocks, nnU-Net's UNets) are exported with their
shape arithmetic recorded in the graph: the padding to the total stride, SEMA's window partition, its padding
and masks follow the input, so the files take any batch and any spatial size, with the outputs the network
gives at that size. Other networks (UNETR, Swin-UNETR, U-Mamba) are fixed to the example's spatial size.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from usema.data.io import atomic_path

# The dynamic spatial axes of an exported graph, named as the axes of usema's arrays (z, y, x in 3D).
SPATIAL_AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def exports_any_size(model: nn.Module) -> bool:
    """Whether `model` says that its traced graph takes any batch and spatial size (`exports_any_size`)."""
    return bool(getattr(model, "exports_any_size", False))


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

    For a network that `exports_any_size`, the trace records its shape arithmetic and takes any batch and
    spatial size. For others, shape arithmetic done in Python (padding, tiling) is fixed to the example's
    size, so export with the size you will run (the plan's patch size suits a sliding-window deployment). The
    model's training flag is restored afterwards.
    """
    path = Path(path)

    def trace() -> None:
        with warnings.catch_warnings():
            # torch>=2.9 marks torch.jit as deprecated; TorchScript stays the format libtorch (C++) loads,
            # which is why this function exists, so the warning would only be noise here. Tracer warnings
            # say that Python shape arithmetic is frozen to the example, which the docstring states (for
            # usema's any-size networks, only torch's own input checks in instance norm raise them).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example)
            with atomic_path(path) as tmp:
                torch.jit.save(traced, str(tmp))

    _in_eval_mode(model, trace)
    return path


def export_onnx(
    model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 18, any_size: bool | None = None
) -> Path:
    """Export `model` to ONNX at `path` with input "image" and output "logits", opset `opset`.

    The batch axis is dynamic. With `any_size` (default: `exports_any_size(model)`) so are the spatial axes
    (named as in `SPATIAL_AXIS_NAMES`): the graph takes any size the network takes and gives its outputs at
    that size; SEMA keeps each stage's window and the number of windows follows the map. Such a graph comes
    from the TorchScript-based exporter, which records the shape arithmetic as it runs: torch.export would have
    to prove the bounds of the window padding and cropping (ceil divisions) for every size, which it cannot,
    and fails or fixes the sizes. Without `any_size` the spatial axes are the example's, and the
    torch.export-based (dynamo) exporter is used where torch and onnxscript provide it. Weights are stored
    inside the one file (no external-data side file that the atomic rename would orphan), which limits the
    model to ONNX's 2 GB protobuf size; usema's networks are far below it.
    """
    path = Path(path)
    if any_size is None:
        any_size = exports_any_size(model)
    accepted = inspect.signature(torch.onnx.export).parameters
    kwargs: dict = {
        "input_names": ["image"],
        "output_names": ["logits"],
        "opset_version": opset,
        "verbose": False,
    }
    # torch>=2.5 chooses the exporter with this flag; older torch has only the TorchScript one.
    if "dynamo" in accepted:
        kwargs["dynamo"] = not any_size and importlib.util.find_spec("onnxscript") is not None
    if kwargs.get("dynamo") and "external_data" in accepted:
        kwargs["external_data"] = False
    if kwargs.get("dynamo"):
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
        # an example of one would fix the batch: torch.export takes sizes 0 and 1 for constants
        example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
    else:
        axes = {0: "batch"}
        if any_size:
            axes.update(enumerate(SPATIAL_AXIS_NAMES[example.dim() - 2], start=2))
        kwargs["dynamic_axes"] = {"image": axes, "logits": axes}

    def export() -> None:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # The TorchScript exporter warns that it is legacy; when used it is chosen on purpose (see above).
            # Its tracer warnings come from torch's own input checks (instance norm) for usema's networks.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # Instance norm normalises with the input's statistics in eval mode too, as ONNX's does: the
            # exporter's note that it exports it "with train=True" says nothing wrong.
            warnings.filterwarnings("ignore", "ONNX export mode is set to TrainingMode.EVAL, but operator "
                                    "'instance_norm'", UserWarning)
            torch.onnx.export(model, (example,), str(tmp), **kwargs)

    _in_eval_mode(model, export)
    return path


def check_export_target(output: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse an export over an existing file (unless `overwrite`) and any export into a fold folder of the
    run, whose checkpoints a model.pt could replace (predict would then find an unreadable checkpoint)."""
    from usema.checkpoint import fold_dirs
    from usema.data.datasets import is_within
    from usema.errors import UsemaError

    for fold_dir in fold_dirs(run_dir).values():
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
) -> tuple[Path, tuple[int | str, ...]]:
    """Export fold `fold`'s `checkpoint` of a trained run to `output`: ONNX for a .onnx name, TorchScript for
    a .pt one.

    The network is exported in fp32 on the CPU, traced on one patch of the plan's size; it takes images
    prepared as RUN/plans.json says (spacing, normalisation) and returns logits (batch, classes, *spatial).
    Networks that `exports_any_size` (USEMA, nnU-Net) give files that take any batch and any spatial size;
    others take patches of the plan's size (ONNX: any batch; TorchScript: one patch). Returns the path and the
    input shape the file takes: an axis name where the axis is dynamic ("batch", "height", ...), the size
    where it is fixed. An existing `output` is replaced only with `overwrite`; outputs inside the run's fold
    folders are refused (`check_export_target`).
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
    channels, patch = plans.dataset.num_channels, tuple(plans.patch_size)
    writer(predictor.model, torch.zeros(1, channels, *patch))
    if exports_any_size(predictor.model):
        return output, ("batch", channels, *SPATIAL_AXIS_NAMES[len(patch)])
    return output, ("batch" if output.suffix.lower() == ".onnx" else 1, channels, *patch)
