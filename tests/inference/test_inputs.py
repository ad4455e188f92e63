"""Input files and folders grouped into cases; output locations that would touch inputs refused."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from usema.errors import DataError
from usema.inference.inputs import (
    PROBLEMS_LISTED,
    InferenceCase,
    check_cases,
    check_output_location,
    collect_cases,
)
from usema.planning import Plans
from usema.preprocessing.dataset import PREPROCESSED_DIR


def plans(num_channels=1, fmt="msd"):
    """A 3D plan of `num_channels` channels of a dataset in format `fmt`."""
    return Plans({
        "version": 2,
        "dataset": {"path": "/nonexistent", "format": fmt, "spatial_dims": 3, "num_channels": num_channels,
                    "labels": {"0": "background", "1": "a"}, "label_mode": "semantic", "num_classes": 2,
                    "cases": ["a"]},
        "target_spacing": [1.0, 1.0, 1.0], "normalization": {"scheme": "none"},
        "patch_size": [8, 8, 8], "batch_size": 2, "model": {"name": "usema"},
        "training": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "iters_per_epoch": 1},
    })


def touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for path in paths:
        path.write_bytes(b"")  # grouping looks at names only; nothing is read here
    return paths


def test_nnunet_channel_files_are_grouped_in_channel_order(tmp_path):
    touch(
        tmp_path,
        "b_0001.nii.gz",
        "a_0000.nii.gz",
        "b_0000.nii.gz",
        "a_0001.nii.gz",
        "rgb.png",
        ".hidden.png",
        "notes.txt",
    )

    cases = collect_cases([tmp_path], plans(num_channels=2))

    assert [(c.case_id, [p.name for p in c.images], c.output_name) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"], "a.nii.gz"),
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz"], "b.nii.gz"),
        ("rgb", ["rgb.png"], "rgb.png"),  # one multi-channel file is a case of its own
    ]


def test_incomplete_channel_files_name_the_case(tmp_path):
    touch(tmp_path, "a_0000.nii.gz", "a_0002.nii.gz")
    with pytest.raises(DataError, match=r"'a' has channel files _0000, _0002; the model expects 2"):
        collect_cases([tmp_path], plans(num_channels=2))


def test_an_nnunet_rgb_photograph_is_one_file_holding_every_channel(tmp_path):
    touch(tmp_path, "polyp_0000.png", "scan_0000.nii.gz")
    cases = collect_cases([tmp_path / "polyp_0000.png"], plans(num_channels=3, fmt="nnunet"))
    assert [(c.case_id, [p.name for p in c.images], c.output_name) for c in cases] == [
        ("polyp", ["polyp_0000.png"], "polyp.png")]
    with pytest.raises(DataError, match=r"'scan' has channel files _0000; the model expects 3"):
        collect_cases([tmp_path], plans(num_channels=3, fmt="nnunet"))  # a volume: one file per channel


def test_channel_suffix_is_only_stripped_for_nnunet_or_multichannel_plans(tmp_path):
    files = touch(tmp_path, "scan_0000.nii.gz", "frame_0003.tif", "photo.JPG")

    single = collect_cases(files, plans(num_channels=1))
    nnunet = collect_cases(files[::2], plans(num_channels=1, fmt="nnunet"))

    assert [(c.case_id, c.output_name) for c in single] == [
        ("frame_0003", "frame_0003.tif"),
        ("photo", "photo.png"),
        ("scan_0000", "scan_0000.nii.gz"),
    ]  # JPEG predictions are written as PNG (lossless)
    assert [(c.case_id, c.output_name) for c in nnunet] == [("photo", "photo.png"), ("scan", "scan.nii.gz")]
    with pytest.raises(DataError, match="'frame' has channel files _0003"):
        collect_cases(files, plans(num_channels=1, fmt="nnunet"))


def test_nnunet_named_inputs_lose_the_channel_suffix_whatever_the_training_layout(tmp_path):
    # nnU-Net's evaluator matches CASE.nii.gz; a run trained on MSD or folder data must name its outputs so too
    named = touch(tmp_path / "imagesTs", "la_003_0000.nii.gz", "la_007_0000.nii.gz")
    numbered = touch(tmp_path / "frames", "img_0000.png", "img_0001.png")
    for fmt in ("msd", "folder", "nnunet"):
        assert [c.output_name for c in collect_cases([tmp_path / "imagesTs"], plans(fmt=fmt))] == [
            "la_003.nii.gz",
            "la_007.nii.gz",
        ]
        assert [c.case_id for c in collect_cases(named[:1], plans(fmt=fmt))] == ["la_003"]
    assert [c.case_id for c in collect_cases([tmp_path / "frames"], plans())] == ["img_0000", "img_0001"]
    assert [c.images for c in collect_cases(numbered, plans())] == [(numbered[0],), (numbered[1],)]


def test_missing_unsupported_and_empty_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.png: input not found"):
        collect_cases([tmp_path / "nope.png"], plans())
    (text,) = touch(tmp_path / "docs", "readme.txt")
    with pytest.raises(DataError, match="readme.txt: unsupported file type"):
        collect_cases([text], plans())
    with pytest.raises(DataError, match="docs: no image files to predict"):
        collect_cases([tmp_path / "docs"], plans())


def test_output_checks(tmp_path):
    images = touch(tmp_path / "in", "a.png", "b.png")
    elsewhere = tmp_path / "out"
    check_output_location(elsewhere, [tmp_path / "in"], [elsewhere / "a.png", elsewhere / "b.png"])  # fine

    # the folder above the inputs is fine as long as no prediction lands on an input file
    check_output_location(tmp_path, [images[0]], [tmp_path / "a.png"])
    with pytest.raises(DataError, match="overwrite an input"):
        check_output_location(tmp_path / "in", [images[0]], [tmp_path / "in" / "a.png"])
    with pytest.raises(DataError, match="two input cases would write"):
        check_output_location(
            elsewhere, [tmp_path / "in"], [elsewhere / "a.png", elsewhere / "x" / ".." / "a.png"]
        )
    (existing,) = touch(tmp_path / "files", "taken.png")
    with pytest.raises(DataError, match="existing file"):
        check_output_location(existing, [tmp_path / "in"], [])


def test_dataset_folders_are_refused_as_output(tmp_path):
    touch(tmp_path / "in", "a.png")
    touch(tmp_path / "nuclei" / "images", "a.png")
    touch(tmp_path / "nuclei" / "labels", "a.png")
    for output in (tmp_path / "nuclei" / "labels", tmp_path / "nuclei" / "images", tmp_path / "nuclei"):
        with pytest.raises(DataError, match="is a folder of the dataset"):
            check_output_location(output, [tmp_path / "in"], [output / "a.png"], overwrite=True)
    # a folder named labels elsewhere is not a dataset's
    check_output_location(
        tmp_path / "mine" / "labels", [tmp_path / "in"], [tmp_path / "mine" / "labels" / "a.png"]
    )
    with pytest.raises(DataError, match="is a folder of the dataset"):
        check_output_location(tmp_path / "d" / "out", [tmp_path / "in"], [], planned_from=tmp_path / "d")


def test_run_folders_are_refused_as_output(tmp_path):
    touch(tmp_path / "in", "a.png")
    run = tmp_path / "run"
    plans().save(run)
    other = tmp_path / "other"
    touch(other / "fold_1", "checkpoint_latest.pt")
    for output, named in ((run, run), (run / "fold_0", run), (run / "fold_all" / "x", run),
                          (run / PREPROCESSED_DIR / "x", run), (other, other), (other / "fold_1", other)):
        with pytest.raises(DataError, match=rf"is the run folder {named.resolve()} or inside one of its fold or "
                                            "preprocessed folders"):
            check_output_location(output, [tmp_path / "in"], [output / "a.png"], overwrite=True)
    # a folder of its own, inside a run or beside it, holds none of the run's files
    for output in (run / "predictions", tmp_path / "predictions"):
        check_output_location(output, [tmp_path / "in"], [output / "a.png"])


def _nifti(path: Path, shape: tuple[int, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def test_check_cases_lists_the_problems_of_every_case_from_the_headers(tmp_path):
    good = InferenceCase("good", (_nifti(tmp_path / "good_0000.nii.gz", (6, 7, 5)),
                                  _nifti(tmp_path / "good_0001.nii.gz", (6, 7, 5))), ".nii.gz")
    check_cases([good], spatial_dims=3, num_channels=2)
    with pytest.raises(DataError, match=r"good_0000\.nii\.gz: has 2 channels but 1 is declared"):
        check_cases([good], spatial_dims=3, num_channels=1)  # a single problem is raised as it is

    grids = InferenceCase("grids", (_nifti(tmp_path / "grids_0000.nii.gz", (6, 7, 5)),
                                    _nifti(tmp_path / "grids_0001.nii.gz", (6, 7, 4))), ".nii.gz")
    flat = InferenceCase("flat", (_nifti(tmp_path / "flat_0000.nii.gz", (6, 7)),
                                  _nifti(tmp_path / "flat_0001.nii.gz", (6, 7))), ".nii.gz")
    broken = []
    for number in range(PROBLEMS_LISTED + 2):
        (tmp_path / f"broken{number}.nii.gz").write_bytes(b"not a nifti file")
        broken.append(InferenceCase(f"broken{number}", (tmp_path / f"broken{number}.nii.gz",), ".nii.gz"))
    with pytest.raises(DataError) as failure:
        check_cases([good, grids, flat, *broken], spatial_dims=3, num_channels=2)
    lines = str(failure.value).splitlines()
    total = 2 + len(broken)
    assert lines[0] == f"{total} of the {total + 1} input cases cannot be predicted:"
    assert len(lines) == 1 + PROBLEMS_LISTED + 1 and lines[-1] == f"  ... and {total - PROBLEMS_LISTED} more"
    assert "grids_0001.nii.gz: channel file geometry differs from grids_0000.nii.gz" in lines[1]
    assert "flat_0000.nii.gz: is 2D but the model is 3D" in lines[2]
    assert all("cannot read the file" in line for line in lines[3:-1])


def test_check_cases_of_nnunet_configurations_accept_volumes_in_2d_and_convert_no_channels(tmp_path):
    from PIL import Image

    volume = InferenceCase("vol", (_nifti(tmp_path / "vol_0000.nii.gz", (6, 7, 5)),), ".nii.gz")
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "gray_0000.png")
    gray = InferenceCase("gray", (tmp_path / "gray_0000.png",), ".png")
    check_cases([volume], spatial_dims={2, 3}, num_channels=1)  # a 2d configuration takes it slice by slice
    with pytest.raises(DataError, match=r"vol_0000\.nii\.gz: is 3D but the model is 2D"):
        check_cases([volume], spatial_dims=2, num_channels=1)
    check_cases([gray], spatial_dims=2, num_channels=3)  # usema's reader turns gray into RGB
    with pytest.raises(DataError, match=r"gray_0000\.png: has 1 channel but the model takes 3"):
        check_cases([gray], spatial_dims={2, 3}, num_channels=3, converts_photos=False)
