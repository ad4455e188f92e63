"""USEMA inside nnU-Net v2 without forking it: a network nnU-Net builds from its plans, a plans converter, a trainer.

- `convert_plans` (`usema nnunet-plans`): an nnU-Net residual-encoder plans file -> one that builds USEMA.
- `network.USEMAnnUNet`: the class those plans name; nnU-Net's `get_network_from_plans` builds it.
- `trainer.nnUNetTrainerUSEMA` (imports nnU-Net): builds USEMA from plain residual-encoder plans too;
  `install_trainer()` (`usema nnunet-install-trainer`) puts its one-line module into nnU-Net's trainer folder,
  where `-tr nnUNetTrainerUSEMA` and nnUNetv2_predict find it; `ext_trainer_folder()` is the folder for
  `nnUNet_extTrainer`, which nnU-Net 2.8 reads only after its own trainers imported (they need timm).

Importing this package does not import nnU-Net.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from usema.errors import UsemaError
from usema.integrations.nnunet.plans import convert_plans, usema_architecture
from usema.utils.atomic import atomic_path

__all__ = ["convert_plans", "ext_trainer_folder", "install_trainer", "usema_architecture"]
TRAINER_MODULE = "nnUNetTrainerUSEMA.py"


def ext_trainer_folder() -> Path:
    """The folder holding the one-line trainer module for nnU-Net's `nnUNet_extTrainer` (nnU-Net 2.8+), or to
    link into nnunetv2/training/nnUNetTrainer/ (older versions)."""
    return Path(__file__).resolve().parent / "ext_trainer"


def nnunet_trainer_folder() -> Path:
    """nnunetv2/training/nnUNetTrainer of the installed nnU-Net (found without importing it)."""
    spec = importlib.util.find_spec("nnunetv2")
    if spec is None or not spec.submodule_search_locations:
        raise UsemaError("nnU-Net v2 is not installed: pip install --no-deps nnunetv2 (docs/nnunet.md)")
    return Path(next(iter(spec.submodule_search_locations))) / "training" / "nnUNetTrainer"


def install_trainer(trainer_folder: str | Path | None = None) -> Path:
    """Write the one-line module that imports nnUNetTrainerUSEMA into nnU-Net's trainer folder (default: the
    installed nnU-Net's); returns its path.

    nnU-Net imports the modules at the top of that folder before its subfolders, so `-tr nnUNetTrainerUSEMA`
    and nnUNetv2_predict find the trainer there before nnU-Net's Primus trainers are imported, which need
    timm (left out by the --no-deps install) and stop the search through `nnUNet_extTrainer`. A file of that
    name that is not this module is refused, never replaced.
    """
    folder = Path(trainer_folder) if trainer_folder is not None else nnunet_trainer_folder()
    if not folder.is_dir():
        raise UsemaError(f"{folder}: not a folder; give nnU-Net's nnunetv2/training/nnUNetTrainer")
    module = (ext_trainer_folder() / TRAINER_MODULE).read_text()
    target = folder / TRAINER_MODULE
    if target.is_file() and not target.is_symlink() and target.read_text() != module:
        raise UsemaError(f"{target}: exists and is not usema's trainer module; move it away first")
    with atomic_path(target) as tmp:
        tmp.write_text(module)
    return target
