"""Turn an nnU-Net v2 residual-encoder plans file into one whose networks are USEMA (`usema nnunet-plans`).

Only each configuration's `architecture` changes: the class becomes USEMAnnUNet and SEMA's settings join nnU-Net's
residual-encoder arguments. Preprocessing (`data_identifier`, spacing, normalisation), patch and batch size and
everything nnU-Net trains with stay, so nnU-Net reuses the preprocessed data; the plans get a name of their own,
so nnU-Net keeps results of both side by side. Nothing here imports nnU-Net.

The plans here are nnU-Net's own JSON, a foreign format, and are read and edited as the dict nnU-Net writes
(usema's plans.json is read only through usema.planning.Plans).
"""

from __future__ import annotations

import json
import pydoc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usema.errors import DataError, UsemaError
from usema.integrations.nnunet.network import NETWORK_CLASS_NAME, USEMAnnUNet, usema_arguments
from usema.models.registry import check_it_builds
from usema.models.usema import DEFAULT_PLACEMENT, blocks_per_placement
from usema.nn.attention import ATTENTION_MODES
from usema.utils.atomic import atomic_path

RESENC_CLASS = "ResidualEncoderUNet"
PLANS_SUFFIX = "_USEMA"
Placement = str | int | Sequence[int]  # see usema.models.usema.blocks_per_placement


def _imported(arch_kwargs: dict[str, Any], requires_import: Sequence[str]) -> dict[str, Any]:
    """arch_kwargs with the named string values imported, as nnU-Net's get_network_from_plans does."""
    imported = dict(arch_kwargs)
    for key in requires_import:
        if imported.get(key) is not None:
            imported[key] = pydoc.locate(imported[key])
            if imported[key] is None:
                raise UsemaError(f"{key}={arch_kwargs[key]!r} cannot be imported")
    return imported


def usema_architecture(architecture: dict[str, Any], placement: Placement = DEFAULT_PLACEMENT,
                       attention: str = "sema", window_size: int | None = None,
                       head_dim: int = 32) -> dict[str, Any]:
    """A configuration's `architecture` entry (nnU-Net's ResidualEncoderUNet) turned into USEMA's, with SEMA
    blocks per stage as `placement` gives them (see usema.models.usema.blocks_per_placement).

    Raises UsemaError for another network class or arguments USEMA cannot honour (see `usema_arguments`).
    """
    class_name = str(architecture.get("network_class_name", ""))
    if class_name == NETWORK_CLASS_NAME:
        raise UsemaError("it builds USEMA already")
    if class_name.rsplit(".", 1)[-1] != RESENC_CLASS:
        raise UsemaError(f"its network is {class_name or 'not named'}, not nnU-Net's {RESENC_CLASS}: plan with a "
                         "residual-encoder planner (nnUNetPlannerResEncM, -L or -XL) and convert those plans")
    if attention not in ATTENTION_MODES:
        raise UsemaError(f"unknown attention mode {attention!r}; choose one of {ATTENTION_MODES}")
    arch_kwargs = dict(architecture.get("arch_kwargs") or {})
    requires_import = list(architecture.get("_kw_requires_import") or [])
    usema_arguments(_imported(arch_kwargs, requires_import))  # refuse now what USEMA could not build later
    try:
        semas = blocks_per_placement(placement, int(arch_kwargs["n_stages"]))
    except ValueError as err:
        raise UsemaError(str(err)) from None
    arch_kwargs.update(sema_per_stage=semas, attention=attention, window_size=window_size, head_dim=head_dim)
    # what USEMA refuses (e.g. fewer features_per_stage than stages) is named now, not when nnU-Net trains
    imported = _imported(arch_kwargs, requires_import)
    try:
        check_it_builds(lambda: USEMAnnUNet(input_channels=1, num_classes=2, deep_supervision=True, **imported))
    except UsemaError as err:
        raise UsemaError(f"its network would not build: {err}") from None
    return {**architecture, "network_class_name": NETWORK_CLASS_NAME, "arch_kwargs": arch_kwargs,
            "_kw_requires_import": requires_import}


def _read_plans(path: Path) -> dict[str, Any]:
    try:
        plans = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not JSON ({err})") from None
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict) or "plans_name" not in plans:
        raise DataError(path, "not an nnU-Net v2 plans file (it needs 'plans_name' and 'configurations')")
    return plans


def convert_plans(source: str | Path, output: str | Path | None = None, *, plans_name: str | None = None,
                  placement: Placement = DEFAULT_PLACEMENT, attention: str = "sema",
                  window_size: int | None = None, head_dim: int = 32) -> Path:
    """Write the USEMA version of the nnU-Net residual-encoder plans `source`; returns the path written.

    nnU-Net reads plans `NAME` from `NAME.json` in the dataset's preprocessed folder (`-p NAME`), so the name and
    the file agree: `plans_name` defaults to the stem of `output`, and `output` to `<plans_name>.json` beside
    `source`, with `plans_name` defaulting to the source's plans name + "_USEMA". The source is never overwritten.
    Every configuration with its own `architecture` is converted (others inherit theirs); `placement`,
    `attention`, `window_size` and `head_dim` are SEMA's settings (see `usema_architecture`).
    """
    source = Path(source)
    plans = _read_plans(source)
    if plans_name is None:
        plans_name = Path(output).stem if output is not None else f"{plans['plans_name']}{PLANS_SUFFIX}"
    output = Path(output) if output is not None else source.parent / f"{plans_name}.json"
    if output.resolve() == source.resolve():
        raise DataError(source, "the output is the input; the input plans are never overwritten")
    if output.suffix != ".json" or output.stem != plans_name:
        raise DataError(output, f"nnU-Net reads plans {plans_name!r} from {plans_name}.json: name the output so")
    if plans_name == plans["plans_name"]:
        raise DataError(source, f"the new plans need a name other than {plans_name!r}, or nnU-Net mixes their results")

    converted = {name: config for name, config in plans["configurations"].items() if "architecture" in config}
    if not converted:
        raise DataError(source, "no configuration has an 'architecture' entry (plans of nnU-Net 2.3 or later are needed)")
    for name, config in converted.items():
        try:
            config["architecture"] = usema_architecture(config["architecture"], placement, attention, window_size,
                                                        head_dim)
        except UsemaError as err:
            raise DataError(source, f"configuration {name!r}: {err}") from None
    plans["plans_name"] = plans_name
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(plans, indent=4) + "\n")
    return output
