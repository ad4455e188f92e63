"""usema.inference.prediction_record: what made an output folder's predictions, and when `predict --resume`
may continue them (predict's own use of it: tests/inference/test_predict_files.py)."""

import hashlib
import json
import shutil

import pytest

from usema.errors import DataError
from usema.inference.prediction_record import (
    DECIDING_KEYS,
    RECORD_NAME,
    check_same_settings,
    differences,
    prediction_settings,
    read_record,
    split_cases,
    write_record,
)


def _run(root, weights: bytes):
    (root / "fold_0").mkdir(parents=True)
    (root / "fold_0" / "checkpoint_best.pt").write_bytes(weights)
    return root


def _settings(run, **changes):
    options = {"tta": True, "step_size": 0.5, "precision": "fp32", "save_probabilities": False, "overlay": False}
    options.update(changes)
    return prediction_settings(run, [run / "fold_0" / "checkpoint_best.pt"], **options)


def test_checkpoints_are_named_by_content_so_a_moved_run_continues_and_a_retrained_one_does_not(tmp_path):
    run = _run(tmp_path / "run", b"weights of the first training")
    settings = _settings(run)
    assert settings["run"] == str(run.resolve()) and list(settings["checkpoints"]) == ["fold_0/checkpoint_best.pt"]

    moved = tmp_path / "elsewhere"
    shutil.copytree(run, moved)
    assert differences(settings, _settings(moved)) == []

    (run / "fold_0" / "checkpoint_best.pt").write_bytes(b"weights of a second training")
    changed = differences(settings, _settings(run))
    assert len(changed) == 1 and changed[0].startswith("checkpoints") and "trained again" in changed[0]
    assert differences(settings, _settings(moved, tta=False, step_size=0.25)) == [
        "tta True -> False",
        "step_size 0.5 -> 0.25",
    ]


def test_a_record_is_read_back_and_a_damaged_one_is_named(tmp_path):
    run = _run(tmp_path / "run", b"weights")
    assert read_record(tmp_path / "out") is None
    write_record(tmp_path / "out", _settings(run), ["a.nii.gz"])
    record = read_record(tmp_path / "out")
    assert set(record) == {*DECIDING_KEYS, "run", "command", "usema_version", "predicted", "written",
                           "written_lists_every_file"}
    assert record["predicted"] == record["written"] == ["a.nii.gz"]
    # an --overwrite begins with no finished prediction, and the files usema wrote stay listed as its own
    write_record(tmp_path / "out", _settings(run), [], ["b.nii.gz"])
    assert read_record(tmp_path / "out")["written"] == ["a.nii.gz", "b.nii.gz"]
    write_record(tmp_path / "out", _settings(run), ["a.nii.gz"])
    record = read_record(tmp_path / "out")
    assert record["predicted"] == ["a.nii.gz"] and record["written"] == ["a.nii.gz", "b.nii.gz"]
    assert {key: record[key] for key in DECIDING_KEYS} == {
        "checkpoints": {"fold_0/checkpoint_best.pt": hashlib.sha256(b"weights").hexdigest()},
        "tta": True, "step_size": 0.5, "precision": "fp32", "save_probabilities": False, "overlay": False,
    }
    assert record["run"] == str(run.resolve())

    (tmp_path / "out" / RECORD_NAME).write_text("{ cut off")
    with pytest.raises(DataError, match=rf"out/{RECORD_NAME}: cannot read the record of the earlier prediction .*"
                                        r"remove it, or --overwrite"):
        read_record(tmp_path / "out")
    (tmp_path / "out" / RECORD_NAME).write_text('{"tta": true}')
    with pytest.raises(DataError, match=r"not a record of usema predict \(it needs the keys checkpoints, tta"):
        read_record(tmp_path / "out")


def test_resume_is_refused_on_other_settings_or_unrecorded_predictions_and_adding_only_warns(tmp_path):
    run = _run(tmp_path / "run", b"weights")
    out = tmp_path / "out"
    out.mkdir()
    check_same_settings(out, _settings(run), resume=True, predictions_there=False)  # nothing there: started
    with pytest.raises(DataError, match=rf"{RECORD_NAME}: not found, so nothing tells what made the predictions"):
        check_same_settings(out, _settings(run), resume=True, predictions_there=True)
    check_same_settings(out, _settings(run), resume=False, predictions_there=True)  # as before the record

    write_record(out, _settings(run), [])
    check_same_settings(out, _settings(run), resume=True, predictions_there=True)  # the same: continued
    with pytest.raises(DataError, match=r"made with other settings: precision 'fp32' -> 'bf16'\. --resume .*"
                                        r"--step-size, --precision"):
        check_same_settings(out, _settings(run, precision="bf16"), resume=True, predictions_there=True)
    with pytest.warns(UserWarning, match=r"out holds predictions made with other settings \(overlay False -> True\)"):
        check_same_settings(out, _settings(run, overlay=True), resume=False, predictions_there=False)


def _outputs(out, *names):
    """name -> [its segmentation file], the files written for those given as 'name*'."""
    outputs = {}
    for name in names:
        outputs[name.rstrip("*")] = [out / name.rstrip("*")]
        if name.endswith("*"):
            out.mkdir(exist_ok=True)
            (out / name.rstrip("*")).write_bytes(b"a prediction")
    return outputs


def test_resume_keeps_only_what_the_record_lists_as_finished_with_the_same_settings(tmp_path):
    run_a, run_b = _run(tmp_path / "a", b"model a"), _run(tmp_path / "b", b"model b")
    out = tmp_path / "out"
    # an --overwrite with model b cut off after its first case, over a folder of model a's predictions
    outputs = _outputs(out, "c0*", "c1*", "c2*")
    write_record(out, _settings(run_a), ["c0", "c1", "c2"])
    assert split_cases(out, _settings(run_b), outputs, resume=False, overwrite=True) == (["c0", "c1", "c2"], [])
    write_record(out, _settings(run_b), ["c0"])
    assert split_cases(out, _settings(run_b), outputs, resume=True, overwrite=False) == (["c1", "c2"], ["c0"])
    # a file the record lists but that is gone is predicted again; the record keeps listing the others
    (out / "c0").unlink()
    write_record(out, _settings(run_b), ["c0", "c1"])
    assert split_cases(out, _settings(run_b), outputs, resume=True, overwrite=False) == (["c0", "c2"], ["c1"])
    # cases added with model a's settings: a warning, and nothing of model b's is listed for them any more
    with pytest.warns(UserWarning, match="other settings"):
        assert split_cases(out, _settings(run_a), _outputs(out, "c3"), resume=False, overwrite=False) == (["c3"], [])
    write_record(out, _settings(run_a), ["c3"])
    assert split_cases(out, _settings(run_a), _outputs(out, "c1", "c3*"), resume=True, overwrite=False) == (
        ["c1"], ["c3"])
    # without --resume nothing is kept, though the record's other cases stay listed
    assert split_cases(out, _settings(run_a), _outputs(out, "c1"), resume=False, overwrite=False) == (["c1"], ["c3"])


def test_overwrite_and_resume_replace_only_the_files_the_record_lists_by_their_path_in_the_folder(tmp_path):
    run = _run(tmp_path / "run", b"weights")
    out = tmp_path / "out"
    outputs = {"c0": [out / "c0", out / "c0.npz", out / "overlays" / "c0.png"]}
    (out / "overlays").mkdir(parents=True)
    for path in outputs["c0"]:
        path.write_bytes(b"a file")
    write_record(out, _settings(run), [], ["c0", "c0.npz"])  # the overlay was not usema's
    for resume in (False, True):  # --overwrite, then --resume
        with pytest.raises(DataError, match=rf"overlays/c0\.png: exists, and {RECORD_NAME} there does not list it"):
            split_cases(out, _settings(run), outputs, resume=resume, overwrite=not resume)
    write_record(out, _settings(run), [], ["overlays/c0.png"])
    assert split_cases(out, _settings(run), outputs, resume=False, overwrite=True) == (["c0"], [])
    # `planned` also names the files a case may get instead (a BMP's labels as PNG): checked as well
    (out / "c0.png").write_bytes(b"a reference")
    with pytest.raises(DataError, match=r"c0\.png: exists"):
        split_cases(out, _settings(run), outputs, resume=False, overwrite=True,
                    planned=[*outputs["c0"], out / "c0.png"])


def test_a_record_of_an_older_usema_still_owns_the_files_written_beside_its_segmentations(tmp_path):
    # an older record listed only segmentations; the probabilities, overlay and folder files usema (or nnU-Net's
    # predictor) wrote beside them stay replaceable, and a file of another name stays refused
    run = _run(tmp_path / "run", b"weights")
    out = tmp_path / "out"
    (out / "overlays").mkdir(parents=True)
    older = ["c0.nii.gz", "c0.npz", "c0.pkl", "overlays/c0.png", "plans.json", "predict_from_raw_data_args.json"]
    for name in [*older, "c0_label.nii.gz"]:
        (out / name).write_bytes(b"a file")
    (out / RECORD_NAME).write_text(json.dumps({**_settings(run), "predicted": ["c0.nii.gz"],
                                               "written": ["c0.nii.gz"]}))
    outputs = {"c0.nii.gz": [out / name for name in older]}
    assert split_cases(out, _settings(run), outputs, resume=False, overwrite=True) == (["c0.nii.gz"], [])
    with pytest.raises(DataError, match=r"c0_label\.nii\.gz: exists, and"):
        split_cases(out, _settings(run), outputs, resume=False, overwrite=True,
                    planned=[*outputs["c0.nii.gz"], out / "c0_label.nii.gz"])
    write_record(out, _settings(run), ["c0.nii.gz"])
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["written_lists_every_file"] is True
    # what was there is claimed, names that were not (dataset.json, never written) are not
    assert sorted(record["written"]) == sorted(older) and "dataset.json" not in record["written"]
