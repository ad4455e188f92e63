"""The package imports without nnU-Net, and holds the folder nnU-Net's trainer search reads."""

import os
import subprocess
import sys

import pytest

from usema.integrations.nnunet import ext_trainer_folder


def test_importing_usema_and_the_integration_does_not_import_nnunet():
    code = ("import sys, usema, usema.cli, usema.integrations.nnunet, usema.integrations.nnunet.network; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nnunetv2', 'dynamic_network_architectures')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_trainer_folder_holds_one_trainer_module():
    modules = sorted(p.name for p in ext_trainer_folder().glob("*.py"))
    assert modules == ["__init__.py", "nnUNetTrainerUSEMA.py"]
    text = (ext_trainer_folder() / "nnUNetTrainerUSEMA.py").read_text()
    assert "from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA" in text


@pytest.mark.slow
def test_the_installed_trainer_is_found_by_name_without_timm(tmp_path):
    # a copy of the installed nnU-Net, so that the venv's stays untouched
    import shutil

    from usema.integrations.nnunet import install_trainer, nnunet_trainer_folder

    installed = nnunet_trainer_folder().parents[1]
    copy = tmp_path / "site" / "nnunetv2"
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = install_trainer(copy / "training" / "nnUNetTrainer")
    assert path == copy / "training" / "nnUNetTrainer" / "nnUNetTrainerUSEMA.py"
    assert install_trainer(path.parent) == path  # installing again rewrites the same module

    code = ("import sys; sys.modules['timm'] = None\n"  # as after the --no-deps install: no timm
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            "from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA\n"
            "import nnunetv2; print(nnunetv2.__file__)\n"
            "print(find('nnUNetTrainerUSEMA') is nnUNetTrainerUSEMA)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy.parent), *sys.path])}
    env.pop("nnUNet_extTrainer", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == [str(copy / "__init__.py"), "True"], result.stderr[-2000:]

    (path.parent / "nnUNetTrainerUSEMA.py").write_text("# someone's own trainer\n")
    with pytest.raises(Exception, match="exists and is not usema's trainer module"):
        install_trainer(path.parent)
