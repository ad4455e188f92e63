"""Preprocessing a whole plan: every case stored once, resumable, redone after an edit of the plan, and the
plan's channel count honoured."""

import json

import numpy as np
import pytest
from PIL import Image

from usema.data.io import ImageGeometry
from usema.data.phantoms import make_phantom_dataset
from usema.planning import Plans
from usema.planning.planner import plan_dataset
from usema.preprocessing.dataset import preprocess_dataset, preprocessing_key
from usema.preprocessing.storage import case_files, open_case


@pytest.fixture
def phantom_run(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", num_cases=3, shape=(12, 14, 10))
    run = tmp_path / "run"
    plan_dataset(data, run, device="cpu")
    return run


def test_preprocess_dataset_writes_every_case_and_resumes(phantom_run):
    plans = Plans.load(phantom_run)
    out = preprocess_dataset(plans, phantom_run)
    metas = sorted(out.glob("*.json"))
    assert [f.stem for f in metas] == plans.dataset.case_ids
    first = open_case(out, metas[0].stem)
    assert first.image.shape == (1, 12, 14, 10) and first.image.dtype == np.float32
    label = first.read_label()
    geometry = ImageGeometry.from_dict(json.loads(metas[0].read_text())["geometry"])
    assert geometry.shape == (12, 14, 10) and set(np.unique(label)) <= {0, 1, 2}
    assert first.location_count(2) > 0 and label[first.class_location(2, 0)] == 2

    stamps = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    redo = case_files(out, metas[1].stem)
    redo["meta"].unlink()
    preprocess_dataset(plans, phantom_run)
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir() if f.name.startswith(metas[0].stem)} == {
        k: v for k, v in stamps.items() if k.startswith(metas[0].stem)
    }
    assert redo["meta"].is_file() and stamps[redo["image"].name] != redo["image"].stat().st_mtime_ns
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # no temporary files left


def test_an_edited_plan_is_honoured_and_cases_of_the_older_format_are_replaced(phantom_run):
    path = phantom_run / "plans.json"
    plans = Plans.load(phantom_run)
    out = phantom_run / "preprocessed"
    out.mkdir()
    case_id = plans.dataset.case_ids[0]
    np.savez(out / f"{case_id}.npz", image=np.zeros(1), plans_key=np.array("old"))  # preprocessing version 1
    preprocess_dataset(plans, phantom_run)
    assert not (out / f"{case_id}.npz").exists()
    edited = json.loads(path.read_text())
    edited["target_spacing"] = [2.0, 2.0, 2.0]  # a user's edit: coarser grid
    path.write_text(json.dumps(edited))
    assert preprocessing_key(Plans.load(phantom_run)) != preprocessing_key(plans)
    preprocess_dataset(Plans.load(phantom_run), phantom_run)
    case = open_case(out, case_id)
    assert case.image.shape == (1, 6, 7, 5) and case.label.shape == (6, 7, 5)


def test_the_plans_channel_count_wins(tmp_path):
    root = tmp_path / "f2d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, mode in enumerate(("L", "L", "RGB")):
        pixels = np.full((8, 8) if mode == "L" else (8, 8, 3), 10 * (i + 1), dtype=np.uint8)
        pixels[0, 0] = 0
        Image.fromarray(pixels).save(root / "images" / f"c{i}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(root / "labels" / f"c{i}.png")
    with pytest.warns(UserWarning, match="converted"):
        plans = plan_dataset(root, tmp_path / "run", device="cpu", num_channels=3)
    assert plans.dataset.num_channels == 3 and plans.dataset.channel_names == ["R", "G", "B"]
    with pytest.warns(UserWarning, match="converted"):
        out = preprocess_dataset(Plans.load(tmp_path / "run"), tmp_path / "run")
    image = open_case(out, "c0").read_image()
    assert image.shape == (3, 8, 8)
    np.testing.assert_array_equal(image[0], image[2])  # gray repeated
