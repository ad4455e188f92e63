"""Planning: the pure rules (strides, patch, batch, optimizer, normalisation), plans on a few real cases, and
plans.json as an editable, validated file."""

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from usema.data.io import probe_image
from usema.data.layouts import load_dataset
from usema.errors import DataError, UsemaError
from usema.planning import Plans
from usema.planning.planner import (
    estimate_activation_bytes,
    plan_dataset,
    plan_network,
    stage_strides,
    target_spacing_for,
    total_stride,
)
from usema.preprocessing.dataset import preprocess_dataset

GIB = 2**30


def test_strides_halve_axes_while_feature_maps_stay_at_least_4():
    assert stage_strides([40, 56, 40], [1, 1, 1]) == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert stage_strides([16, 64], [1, 1]) == [[1, 1], [2, 2], [2, 2], [1, 2], [1, 2]]
    assert len(stage_strides([512, 512], [1, 1])) == 6  # at most 6 stages in 2D
    assert len(stage_strides([256, 256, 256], [1, 1, 1])) == 5  # and 5 in 3D
    # anisotropic: the coarse axis (3 mm) waits until the in-plane spacing has caught up
    strides = stage_strides([32, 128, 128], [3.0, 0.8, 0.8])
    assert strides[1] == [1, 2, 2] and strides[2] == [2, 2, 2]


def test_patch_is_a_multiple_of_the_total_stride_and_fits_the_budget():
    plan = plan_network([35, 50, 36], [1, 1, 1], dataset_voxels=260 * 63_000, budget_bytes=5 * GIB)
    assert plan["patch_size"] == [40, 56, 40]
    stride = total_stride(plan["strides"])
    assert all(p % s == 0 for p, s in zip(plan["patch_size"], stride, strict=True))
    small = plan_network([200, 240, 200], [1, 1, 1], dataset_voxels=1e10, budget_bytes=1 * GIB)
    assert estimate_activation_bytes(small["patch_size"], small["strides"], 2) <= 1 * GIB
    assert np.prod(small["patch_size"]) < 200 * 240 * 200 and small["batch_size"] == 2
    stride = total_stride(small["strides"])
    assert all(p % s == 0 for p, s in zip(small["patch_size"], stride, strict=True))


def test_memory_estimate_grows_with_patch_and_batch():
    strides = stage_strides([64, 64], [1, 1])
    one = estimate_activation_bytes([64, 64], strides, 1)
    assert estimate_activation_bytes([64, 64], strides, 3) == 3 * one
    assert estimate_activation_bytes([128, 128], stage_strides([128, 128], [1, 1]), 1) > 3 * one


def test_target_spacing_is_the_median_except_for_strong_anisotropy():
    assert target_spacing_for([[1, 1, 1], [1, 2, 1], [1, 3, 1]]) == [1.0, 2.0, 1.0]
    target = target_spacing_for([[5.0, 0.7, 0.7]] * 5 + [[2.5, 0.7, 0.7]] * 5)
    assert target[1:] == [0.7, 0.7] and target[0] < 3.75


@pytest.mark.shared_data
def test_hippocampus_and_dsb2018_plans_match_nnunet_scale(hippocampus_dir, dsb2018_dir):
    """The rules on the full real datasets' shapes (read from headers only): near nnU-Net's own plans."""
    for root, patch, batch_range in (
        (hippocampus_dir, [40, 56, 40], (8, 10)),
        (dsb2018_dir, [256, 256], (8, 12)),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DSB2018: label mode guessed, RGB minority converted
            spec = load_dataset(root, label_mode="instance" if root == dsb2018_dir else None)
        shapes = np.array([probe_image(case.images[0])[1].shape for case in spec.cases])
        plan = plan_network(
            np.median(shapes, axis=0).tolist(),
            [1.0] * shapes.shape[1],
            float(shapes.prod(axis=1).sum()),
            5 * GIB,
        )
        assert plan["patch_size"] == patch
        assert batch_range[0] <= plan["batch_size"] <= batch_range[1]


def _msd_links(tmp_path, source, count):
    """An MSD folder in tmp_path of symbolic links to `count` real cases (nothing is copied)."""
    meta = json.loads((source / "dataset.json").read_text())
    meta["training"] = meta["training"][:count]
    root = tmp_path / "links"
    for entry in meta["training"]:
        for key in ("image", "label"):
            link = root / entry[key]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source / entry[key])
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.shared_data
def test_plan_on_six_hippocampus_cases(tmp_path, hippocampus_dir):
    root = _msd_links(tmp_path, hippocampus_dir, 6)
    plans = plan_dataset(root, tmp_path / "run", device="cpu")
    assert json.loads((tmp_path / "run" / "plans.json").read_text()) == plans.to_dict()
    info = plans.dataset
    assert (info.format, info.spatial_dims, info.num_channels, info.num_classes) == ("msd", 3, 1, 3)
    assert len(info.case_ids) == 6 and info.modality == "MR"
    assert plans.normalization.to_dict() == {"scheme": "zscore_per_image"}
    assert plans.target_spacing == [1.0, 1.0, 1.0]
    stride = total_stride(plans.network_settings["strides"])
    assert all(p % s == 0 and 32 <= p <= 64 for p, s in zip(plans.patch_size, stride, strict=True))
    assert plans.model_name == "usema" and plans.training.optimizer == "adamw"
    fingerprint = plans.fingerprint
    assert len(fingerprint["shapes"]) == 6 and fingerprint["class_voxels"]["1"] > 0
    stats = fingerprint["intensity"][0]
    assert stats["p00_5"] < stats["mean"] < stats["p99_5"] and stats["std"] > 0
    assert sorted(p.name for p in root.iterdir()) == [
        "dataset.json",
        "imagesTr",
        "labelsTr",
    ]  # nothing written there


@pytest.mark.shared_data
def test_plan_on_a_few_dsb2018_cases(tmp_path, dsb2018_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case_ids = [c.case_id for c in load_dataset(dsb2018_dir, "instance").cases[:5]]
        plans = plan_dataset(
            dsb2018_dir, tmp_path / "run", label_mode="instance", case_ids=case_ids, device="cpu"
        )
    info = plans.dataset
    assert (info.format, info.spatial_dims, info.label_mode, info.num_classes) == (
        "folder2d", 2, "instance", 3
    )
    assert info.case_ids == case_ids and info.labels == {"0": "background", "1": "interior", "2": "boundary"}
    stride = total_stride(plans.network_settings["strides"])
    assert all(p % s == 0 and p >= 256 for p, s in zip(plans.patch_size, stride, strict=True))
    assert plans.fingerprint["class_voxels"]["2"] > 0


def _ct_dataset(root):
    """Two CT-like cases: air background, body around 40 HU with a few very bright voxels."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(2):
        image = np.full((12, 12, 12), -1000.0, dtype=np.float32)
        label = np.zeros((12, 12, 12), dtype=np.uint8)
        label[2:10, 2:10, 2:10] = 1
        image[label == 1] = rng.normal(40, 10, int(label.sum()))
        image[5, 5, 5] = 3000.0
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "imagesTr" / f"ct_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / f"ct_{i}.nii.gz"))
        training.append({"image": f"./imagesTr/ct_{i}.nii.gz", "label": f"./labelsTr/ct_{i}.nii.gz"})
    meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_ct_normalization_clips_to_foreground_percentiles(tmp_path):
    plans = plan_dataset(_ct_dataset(tmp_path / "ct"), tmp_path / "run", device="cpu")
    [norm] = plans.normalization.for_channels(1)
    assert plans.normalization.scheme == norm.scheme == "ct" and plans.dataset.modality == "CT"
    low, high = norm.clip
    assert 0 < low < 40 < high < 3000  # foreground percentiles: neither air nor the bright outlier
    assert 35 < norm.mean < 60 and norm.std > 5


@pytest.mark.parametrize("inside", [".", "imagesTr", "labelsTr/a"])
def test_a_run_folder_in_the_dataset_folder_is_refused_naming_both(tmp_path, inside):
    root = _ct_dataset(tmp_path / "ct")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    run = root / inside
    for data in (root, root / "dataset.json"):
        with pytest.raises(DataError, match=r"the run folder is the dataset folder .*ct or one of its image or "
                                            r"label folders; .*ct_run\)") as err:
            plan_dataset(data, run, device="cpu")
        assert err.value.path == run
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written there
    plan_dataset(root, tmp_path / "ct_run", device="cpu")  # beside it: planned
    # a folder of its own in the dataset folder is no layout's input: a project folder may hold its runs
    plan_dataset(root, root / "runs" / "a", device="cpu")
    # images a dataset.json lists outside the standard folders are protected too
    manifest = json.loads((root / "dataset.json").read_text())
    (root / "raw").mkdir()
    first = manifest["training"][0]
    for key in ("image", "label"):
        moved = root / "raw" / Path(first[key]).name
        (root / first[key]).rename(moved)
        first[key] = f"./raw/{moved.name}"
    (root / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"the run folder is .*raw or inside it, which holds the dataset's images"):
        plan_dataset(root, root / "raw" / "run", device="cpu")
    assert not (root / "raw" / "run").exists()
    assert [c.case_id for c in load_dataset(root).cases] == Plans.load(root / "runs" / "a").dataset.case_ids


def test_preprocessing_into_the_dataset_folder_never_overwrites_its_files(tmp_path):
    root = _ct_dataset(tmp_path / "ct")
    plans = plan_dataset(root, tmp_path / "run", device="cpu")
    # preprocess_dataset called with the dataset folder as the run (plan and train refuse it)
    (root / "preprocessed").mkdir()
    foreign = root / "preprocessed" / f"{plans.dataset.case_ids[0]}.npy"
    np.save(foreign, np.zeros(3))
    with pytest.raises(DataError, match="not a usema preprocessed case"):
        preprocess_dataset(plans, root)
    np.testing.assert_array_equal(np.load(foreign), np.zeros(3))


def test_plans_are_validated_and_edits_are_honoured(tmp_path):
    plans = plan_dataset(_ct_dataset(tmp_path / "ct"), tmp_path / "run", device="cpu", epochs=7, max_cases=1)
    assert plans.training.epochs == 7 and len(plans.dataset.case_ids) == 1
    path = tmp_path / "run" / "plans.json"
    edited = json.loads(path.read_text())
    edited["patch_size"] = [8, 8, 8]
    edited["training"]["optimizer"] = "sgd"
    path.write_text(json.dumps(edited))
    loaded = Plans.load(tmp_path / "run")
    assert loaded.patch_size == [8, 8, 8] and loaded.training.optimizer == "sgd"
    assert Plans.load(path) == loaded

    for key, value, problem in (
        ("patch_size", [8, 8], "patch_size"),
        ("batch_size", 0, "batch_size"),
        ("normalization", {"scheme": "magic"}, "normalization.scheme"),
    ):
        broken = dict(edited, **{key: value})
        path.write_text(json.dumps(broken))
        with pytest.raises(DataError, match=problem) as err:
            Plans.load(tmp_path / "run")
        assert "plans.json" in str(err.value)
    del edited["training"]
    path.write_text(json.dumps(edited))
    with pytest.raises(DataError, match="'training' is missing"):
        Plans.load(tmp_path / "run")
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read plans JSON"):
        Plans.load(tmp_path / "run")
    with pytest.raises(DataError, match="run `usema plan"):
        Plans.load(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="batch_size"):
        Plans(dict(loaded.to_dict(), batch_size="eight"))


def test_unknown_plan_options_are_refused(tmp_path):
    with pytest.raises(UsemaError, match=r"unknown plan edit\(s\) patchsize .*the keys are: .*patch_size"):
        plan_dataset(_ct_dataset(tmp_path / "ct"), tmp_path / "run", patchsize=[8, 8, 8])


def test_a_run_with_trained_folds_keeps_its_plan_unless_told(tmp_path):
    data, run = _ct_dataset(tmp_path / "ct"), tmp_path / "run"
    plan_dataset(data, run, batch_size=2)
    (run / "fold_1").mkdir()
    (run / "fold_1" / "checkpoint_best.pt").write_bytes(b"trained")
    before = (run / "plans.json").read_text()
    with pytest.raises(UsemaError, match=r"plans.json: the run holds trained folds \(fold_1\)"):
        plan_dataset(data, run, batch_size=3)
    assert (run / "plans.json").read_text() == before
    assert plan_dataset(data, run, batch_size=3, overwrite=True).batch_size == 3


def test_cpu_plans_cap_the_batch_unless_it_is_given(tmp_path, monkeypatch):
    from usema.planning import planner

    real = planner.plan_network
    monkeypatch.setattr(planner, "plan_network", lambda *a, **k: {**real(*a, **k), "batch_size": 12})
    data = _ct_dataset(tmp_path / "ct")
    assert plan_dataset(data, tmp_path / "run", device="cpu").batch_size == planner.CPU_MAX_BATCH == 4
    assert plan_dataset(data, tmp_path / "run2", device="cpu", batch_size=9).batch_size == 9


def test_images_too_small_to_train_on_are_refused_at_planning_naming_them(tmp_path):
    root = _ct_dataset(tmp_path / "ct")
    for i in range(2):
        nib.save(
            nib.Nifti1Image(np.full((1, 1, 1), 40.0, np.float32), np.eye(4)),
            root / "imagesTr" / f"ct_{i}.nii.gz",
        )
        nib.save(
            nib.Nifti1Image(np.ones((1, 1, 1), np.uint8), np.eye(4)), root / "labelsTr" / f"ct_{i}.nii.gz"
        )
    message = (
        r"ct_0\.nii\.gz: is 1x1x1 voxels at the planned spacing .* too small to train on .*; so are 1 more"
    )
    with pytest.raises(DataError, match=message):
        plan_dataset(root, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run" / "plans.json").exists()


def test_a_training_entry_without_label_is_refused_at_planning_naming_dataset_json_and_the_case(tmp_path):
    root = _ct_dataset(tmp_path / "ct")
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"][1]["label"]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(
        DataError, match=r"dataset\.json: the training case 'ct_1' \(ct_1\.nii\.gz\) has no label"
    ):
        plan_dataset(root, tmp_path / "run", device="cpu")


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"patch_size": [32, 32]}, r"--plan patch_size=\[32, 32\]: must be 3 positive integers, one per axis of this 3D"),
        ({"patch_size": [0, 0, 0]}, r"--plan patch_size=\[0, 0, 0\]: must be 3 positive integers"),
        ({"batch_size": "two"}, '--plan batch_size="two": must be an integer >= 1'),
        ({"batch_size": 0}, "--plan batch_size=0: must be an integer >= 1"),
        ({"target_spacing": [0, 1, 1]}, r"--plan target_spacing=\[0, 1, 1\]: must be 3 positive numbers \(mm\)"),
        ({"target_spacing": [float("inf"), 1, 1]}, "--plan target_spacing=.Infinity, 1, 1.: must be 3 positive"),
        ({"epochs": 0}, "--plan epochs=0: must be an integer >= 1"),
        ({"lr": float("nan")}, "--plan lr=NaN: must be a positive number"),
        ({"time_budget_minutes": -5}, "--plan time_budget_minutes=-5: must be a positive, finite number"),
        ({"network_settings": [16]}, r"--plan network_settings=\[16\]: must be a JSON object"),
    ],
)
def test_plan_edits_are_checked_before_any_case_is_read(tmp_path, monkeypatch, edit, message):
    from usema.planning import planner

    def never(*args, **kwargs):
        raise AssertionError("the fingerprint was computed before the edits were checked")

    data = _ct_dataset(tmp_path / "ct")
    monkeypatch.setattr(planner, "compute_fingerprint", never)
    with pytest.raises(UsemaError, match=message) as err:
        plan_dataset(data, tmp_path / "run", device="cpu", **edit)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "plans.json").exists()


def test_a_given_batch_is_the_plans_and_null_leaves_it_to_the_planner(tmp_path):
    data = _ct_dataset(tmp_path / "ct")
    assert plan_dataset(data, tmp_path / "one", device="cpu", batch_size=1).batch_size == 1
    assert plan_dataset(data, tmp_path / "planned", device="cpu", batch_size=None).batch_size == 2
    with pytest.raises(UsemaError, match="memory budget 0 GiB: must be a positive"):
        plan_dataset(data, tmp_path / "none", device="cpu", memory_budget_gb=0)


def test_network_settings_the_network_refuses_are_no_plan(tmp_path):
    with pytest.raises(DataError, match=r"plans\.json: model 'usema' cannot be built from its network settings: RoPE"):
        plan_dataset(_ct_dataset(tmp_path / "ct"), tmp_path / "run", device="cpu",
                     network_settings={"base_features": 4, "head_dim": 4})
    assert not (tmp_path / "run" / "plans.json").exists()
