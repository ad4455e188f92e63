"""The package imports without nnU-Net, and holds the folder nnU-Net's trainer search reads."""

import subprocess
import sys

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
