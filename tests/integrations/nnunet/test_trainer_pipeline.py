"""USEMA through nnU-Net's whole pipeline on CPU, on six real hippocampus cases: nnU-Net plans and preprocesses
with its ResEnc M planner, `usema nnunet-plans` converts the plans, nnU-Net's own trainer trains USEMA from them
and `nnUNetv2_predict` segments an unseen case."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json  # noqa: E402
from nnunetv2.run.run_training import get_trainer_from_args  # noqa: E402

from usema.cli import main  # noqa: E402
from usema.integrations.nnunet.network import NETWORK_CLASS_NAME, USEMAnnUNet  # noqa: E402

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]  # nnU-Net preprocesses and trains on real data

DATASET = "Dataset987_Hippo"
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007",
         "hippocampus_008"]
UNSEEN = "hippocampus_011"
PLANS = "nnUNetResEncUNetMPlans_USEMA"


def nnunet_command(name: str, *args, env: dict) -> None:
    """Run one of nnU-Net's console scripts (installed beside this Python) and fail with its output."""
    command = [str(Path(sys.executable).parent / name), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def hippo(hippocampus_dir, tmp_path_factory):
    """nnU-Net's folders in tmp with the six cases planned, preprocessed and their plans converted to USEMA."""
    root = tmp_path_factory.mktemp("nnunet")
    raw = root / "raw" / DATASET
    for sub, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
        (raw / sub).mkdir(parents=True)
        for case in CASES:
            (raw / sub / f"{case}{suffix}.nii.gz").symlink_to(hippocampus_dir / sub / f"{case}.nii.gz")
    generate_dataset_json(str(raw), {0: "MRI"}, {"background": 0, "Anterior": 1, "Posterior": 2}, len(CASES),
                          ".nii.gz")
    # one process and thread everywhere: light and deterministic on a busy 2-core machine (nnU-Net's planner sets
    # torch's threads to nnUNet_n_proc_DA; training in this process reads 0 as "no augmentation workers")
    settings = {"nnUNet_raw": root / "raw", "nnUNet_preprocessed": root / "preprocessed",
                "nnUNet_results": root / "results", "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1",
                "OMP_NUM_THREADS": "1"}
    env = {**os.environ, **{k: str(v) for k, v in settings.items()}}
    nnunet_command("nnUNetv2_plan_and_preprocess", "-d", "987", "-pl", "nnUNetPlannerResEncM", "-c", "3d_fullres",
                   "-np", "1", "-npfp", "1", env=env)
    preprocessed = root / "preprocessed" / DATASET
    assert main(["nnunet-plans", str(preprocessed / "nnUNetResEncUNetMPlans.json")]) == 0
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**settings, "nnUNet_n_proc_DA": "0"}.items():
            patch.setenv(key, str(value))
        yield SimpleNamespace(root=root, env=env, preprocessed=preprocessed, raw=raw)


def nnunet_trainer():
    """nnU-Net's default trainer on the converted plans (nothing of ours but the plans), for two iterations."""
    trainer = get_trainer_from_args(DATASET, "3d_fullres", 0, "nnUNetTrainer", PLANS, device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    return trainer


def test_converted_plans_reuse_nnunets_preprocessing(hippo):
    original = json.loads((hippo.preprocessed / "nnUNetResEncUNetMPlans.json").read_text())
    converted = json.loads((hippo.preprocessed / f"{PLANS}.json").read_text())
    config, before = converted["configurations"]["3d_fullres"], original["configurations"]["3d_fullres"]
    assert converted["plans_name"] == PLANS and original["plans_name"] == "nnUNetResEncUNetMPlans"
    assert config["data_identifier"] == before["data_identifier"]
    assert (hippo.preprocessed / config["data_identifier"]).is_dir()
    assert config["architecture"]["network_class_name"] == NETWORK_CLASS_NAME
    n_stages = before["architecture"]["arch_kwargs"]["n_stages"]
    assert config["architecture"]["arch_kwargs"]["sema_per_stage"] == [0] * (n_stages - 2) + [1, 1]


def test_nnunets_trainer_switches_usemas_deep_supervision(hippo, one_thread):
    trainer = nnunet_trainer()
    trainer.initialize()
    assert isinstance(trainer.network, USEMAnnUNet)
    patch = tuple(trainer.configuration_manager.patch_size)
    x = torch.randn(1, 1, *patch)

    trainer.set_deep_supervision_enabled(True)
    outputs = trainer.network(x)
    scales = [tuple(int(s * p) for s, p in zip(scale, patch)) for scale in trainer._get_deep_supervision_scales()]
    assert [tuple(o.shape) for o in outputs] == [(1, 3, *size) for size in scales]
    targets = [torch.randint(0, 3, (1, 1, *size)) for size in scales]
    trainer.loss(outputs, targets).backward()  # nnU-Net's deep-supervision loss takes USEMA's outputs as they are
    assert all(torch.isfinite(p.grad).all() for p in trainer.network.parameters() if p.grad is not None)

    trainer.set_deep_supervision_enabled(False)
    out = trainer.network(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, *patch)


def test_nnunet_trains_usema_and_predicts_an_unseen_case_on_cpu(hippo, hippocampus_dir, one_thread, tmp_path):
    plans_file = hippo.preprocessed / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 2  # plans are data: a smaller batch for a CPU test
    plans_file.write_text(json.dumps(plans, indent=4))
    trainer = nnunet_trainer()
    trainer.run_training()
    assert isinstance(trainer.network, USEMAnnUNet)
    fold = hippo.root / "results" / DATASET / f"nnUNetTrainer__{PLANS}__3d_fullres" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    sema_blocks = [k for k in checkpoint["network_weights"] if k.endswith("qk_proj.weight")]
    assert len(sema_blocks) == 2 and not any(k.startswith("encoder.0.") for k in sema_blocks)  # deepest-2

    (tmp_path / "in").mkdir()
    image = hippocampus_dir / "imagesTr" / f"{UNSEEN}.nii.gz"
    (tmp_path / "in" / f"{UNSEEN}_0000.nii.gz").symlink_to(image)
    nnunet_command("nnUNetv2_predict", "-i", tmp_path / "in", "-o", tmp_path / "out", "-d", "987", "-c",
                   "3d_fullres", "-f", "0", "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1",
                   "--disable_tta", env=hippo.env)
    prediction, source = nib.load(tmp_path / "out" / f"{UNSEEN}.nii.gz"), nib.load(image)
    assert prediction.shape == source.shape and np.allclose(prediction.affine, source.affine, atol=1e-4)
    labels = np.asarray(prediction.dataobj)
    assert np.issubdtype(labels.dtype, np.integer) and set(np.unique(labels)) <= {0, 1, 2}
