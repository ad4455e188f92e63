import csv
import json
import math
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from usema.errors import DataError, UsemaError
from usema.evaluation.evaluate_folder import default_output_dir, evaluate

SPACING = (2.0, 0.5, 0.5)
SHAPE = (12, 10, 10)


def _write_nifti(array: np.ndarray, path: Path, spacing=SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*spacing, 1.0])), path)
    return path


def _write_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint16)).save(path)
    return path


def _read_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as handle:
        return {(r["case"], r["class"]): r for r in csv.DictReader(handle)}


@pytest.fixture
def nifti_cases(tmp_path):
    """Two 3D cases. case_a: class 1 shifted by 2 voxels along the 2 mm axis, class 2 absent from both.
    case_b: class 1 exact, class 2 in the reference only (missed)."""
    cube = np.zeros(SHAPE, dtype=np.uint8)
    cube[2:6, 2:6, 2:6] = 1
    _write_nifti(cube, tmp_path / "gt" / "case_a.nii.gz")
    _write_nifti(np.roll(cube, 2, axis=0), tmp_path / "pred" / "case_a.nii.gz")
    ref_b = cube.copy()
    ref_b[8:10, 7:9, 7:9] = 2
    _write_nifti(ref_b, tmp_path / "gt" / "case_b.nii.gz")
    _write_nifti(cube, tmp_path / "pred" / "case_b.nii.gz")
    return tmp_path / "pred", tmp_path / "gt"


def test_nifti_folders_give_per_case_scores_and_summary(nifti_cases, tmp_path, capsys):
    pred, gt = nifti_cases
    summary = evaluate(pred, gt)

    out = tmp_path / "pred_evaluation"  # default: PRED_evaluation beside PRED
    rows = _read_rows(out / "per_case.csv")
    assert sorted(rows) == [("case_a", "1"), ("case_a", "2"), ("case_b", "1"), ("case_b", "2")]
    # shifted cube (see test_metrics): 32 of 64 voxels shared; 28 of 56 surface voxels within 1 mm; HD95 2 x 2 mm
    a1 = rows[("case_a", "1")]
    assert float(a1["dice"]) == pytest.approx(2 * 32 / 128)
    assert float(a1["nsd"]) == pytest.approx(28 / 56)
    assert float(a1["hd95"]) == pytest.approx(4.0)
    assert [float(rows[("case_a", "2")][m]) for m in ("dice", "nsd", "hd95")] == [1.0, 1.0, 0.0]
    assert [float(rows[("case_b", "1")][m]) for m in ("dice", "nsd", "hd95")] == [1.0, 1.0, 0.0]
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, SPACING, strict=True)))
    b2 = rows[("case_b", "2")]
    assert (float(b2["dice"]), float(b2["nsd"])) == (0.0, 0.0)
    assert float(b2["hd95"]) == pytest.approx(diagonal, rel=1e-5)

    written = json.loads((out / "summary.json").read_text())
    assert written == summary
    assert summary["num_cases"] == 2
    assert summary["tolerance_mm"] == {"1": 1.0, "2": 1.0}
    assert summary["classes"]["1"]["dice"]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary["classes"]["1"]["dice"]["std"] == pytest.approx(0.25)
    assert summary["classes"]["2"]["hd95"]["mean"] == pytest.approx(diagonal / 2, rel=1e-5)
    assert summary["mean"]["nsd"] == pytest.approx(((0.5 + 1.0) / 2 + (1.0 + 0.0) / 2) / 2)
    out_lines = capsys.readouterr().out.splitlines()
    assert "case" not in out_lines[0]  # a table, headed by "class"
    assert "hd95 and the nsd tolerance (1) in the images' spacing units: mm, or pixels for PNG/JPEG/TIFF/BMP" \
        in out_lines


def test_tolerance_per_class_names_from_labels_and_explicit_output(nifti_cases, tmp_path):
    pred, gt = nifti_cases
    out = tmp_path / "scores"
    summary = evaluate(
        pred, gt, output=out, tolerance_mm=[2.0, 5.0], labels={"0": "bg", "1": "body", "2": "tail"}
    )
    rows = _read_rows(out / "per_case.csv")
    assert float(rows[("case_a", "1")]["nsd"]) == pytest.approx(
        40 / 56
    )  # 24 + 4 + 12 surface voxels within 2 mm
    assert rows[("case_a", "1")]["name"] == "body"
    assert summary["tolerance_mm"] == {"1": 2.0, "2": 5.0}
    assert summary["classes"]["2"]["name"] == "tail"
    with pytest.raises(UsemaError, match="3 NSD tolerances"):
        evaluate(pred, gt, output=out, tolerance_mm=[1.0, 2.0, 3.0])


def test_png_instances_give_f1_and_foreground_dice(tmp_path):
    ref = np.zeros((16, 20), dtype=np.int64)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4], pred[1:4, 1:4] = 1, 40  # exact match (9 px)
    ref[6:8, 1:6], pred[6:8, 1:4] = 2, 41  # 6 of 10 px: IoU 0.6, a match
    ref[10:12, 1:6], pred[10:12, 1:3] = 3, 42  # 4 of 10 px: IoU 0.4, no match
    pred[13:15, 15:18] = 43  # spurious, 6 px
    _write_png(ref, tmp_path / "gt" / "cells.png")
    _write_png(pred, tmp_path / "pred" / "cells.png")

    summary = evaluate(tmp_path / "pred", tmp_path / "gt", output=tmp_path / "out", instance=True)
    row = _read_rows(tmp_path / "out" / "per_case.csv")[("cells", "1")]
    assert (int(row["tp"]), int(row["fp"]), int(row["fn"])) == (2, 2, 1)
    assert float(row["f1"]) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert float(row["precision"]) == pytest.approx(2 / 4)
    assert float(row["recall"]) == pytest.approx(2 / 3)
    ref_px, pred_px, shared_px = 9 + 10 + 10, 9 + 6 + 4 + 6, 9 + 6 + 4
    assert float(row["dice"]) == pytest.approx(2 * shared_px / (ref_px + pred_px), rel=1e-5)
    assert summary["tolerance_mm"] == {"1": 2.0}  # 2 px default in 2D
    assert summary["instance"]["f1_pooled"] == pytest.approx(4 / 7)


def test_png_semantic_classes_default_to_values_in_the_reference(tmp_path):
    ref = np.zeros((8, 8), dtype=np.int64)
    ref[1:3, 1:3], ref[5:7, 5:7] = 1, 3
    pred = ref.copy()
    pred[5:7, 5:7] = 0
    pred[0, 7] = 2  # a label the reference never uses: not a class
    _write_png(ref, tmp_path / "gt" / "x.png")
    _write_png(pred, tmp_path / "pred" / "x.png")
    with pytest.warns(
        UserWarning, match=r"label values \[2\] that the reference labels \[1, 3\] do not declare"
    ):
        summary = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert list(summary["classes"]) == ["1", "3"]
    assert summary["classes"]["1"]["dice"]["mean"] == 1.0
    assert summary["classes"]["3"]["dice"]["mean"] == 0.0


def test_missing_prediction_is_an_error_naming_the_case(nifti_cases):
    pred, gt = nifti_cases
    (pred / "case_b.nii.gz").unlink()
    with pytest.raises(DataError, match="case_b") as err:
        evaluate(pred, gt)
    assert err.value.path == gt / "case_b.nii.gz"
    assert not (pred.parent / "pred_evaluation").exists()


def test_extra_predictions_are_ignored_with_a_warning_and_duplicates_refused(nifti_cases, tmp_path):
    pred, gt = nifti_cases
    _write_nifti(np.zeros(SHAPE, np.uint8), pred / "case_test.nii.gz")
    with pytest.warns(UserWarning, match="1 prediction in .* has no reference .*: case_test.nii.gz$"):
        summary = evaluate(pred, gt)
    assert summary["num_cases"] == 2
    _write_nifti(np.zeros(SHAPE, np.uint8), pred / "case_a.nii")
    with pytest.raises(DataError, match="second file for case 'case_a'"):
        evaluate(pred, gt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no segmentation files"):
        evaluate(pred, empty)


def test_shape_mismatch_is_an_error_naming_the_prediction(nifti_cases):
    pred, gt = nifti_cases
    _write_nifti(np.zeros((12, 10, 9), np.uint8), pred / "case_b.nii.gz")
    with pytest.raises(DataError, match="shape") as err:
        evaluate(pred, gt)
    assert err.value.path == pred / "case_b.nii.gz"


def test_single_files_and_output_refusing_to_overwrite_an_input(nifti_cases, tmp_path):
    pred, gt = nifti_cases
    summary = evaluate(pred / "case_b.nii.gz", gt / "case_b.nii.gz", output=tmp_path / "one")
    assert summary["num_cases"] == 1
    assert summary["classes"]["2"]["dice"]["mean"] == 0.0
    clash = tmp_path / "clash" / "summary.json"  # an input named like an output: never read, refused first
    clash.parent.mkdir()
    clash.write_bytes(b"not read")
    with pytest.raises(DataError, match="input"):
        evaluate(clash, clash, output=clash.parent)


def test_scores_are_never_written_into_the_reference_or_prediction_folder(nifti_cases, tmp_path):
    pred, gt = nifti_cases
    default = (tmp_path / "pred_evaluation").resolve()
    for output, folder in ((gt, "reference"), (gt / "scores", "reference"), (pred, "prediction"),
                           (pred / "scores", "prediction")):
        with pytest.raises(DataError, match=rf"is the {folder} folder .* or inside it; .*leave out -o for the "
                                            rf"default {default}") as err:
            evaluate(pred, gt, output=output)
        assert err.value.path == output
    assert sorted(p.name for p in gt.iterdir()) == ["case_a.nii.gz", "case_b.nii.gz"]  # labels only
    assert sorted(p.name for p in pred.iterdir()) == ["case_a.nii.gz", "case_b.nii.gz"]
    # a predicted file: its folder holds the default output, CASE_evaluation
    evaluate(pred / "case_b.nii.gz", gt / "case_b.nii.gz")
    assert (pred / "case_b_evaluation" / "summary.json").is_file()
    # two files in one working folder bound no folder: scores go into a folder beside them
    pair = tmp_path / "pair"
    pair.mkdir()
    shutil.copy(pred / "case_b.nii.gz", pair / "pred.nii.gz")
    shutil.copy(gt / "case_b.nii.gz", pair / "gt.nii.gz")
    evaluate(pair / "pred.nii.gz", pair / "gt.nii.gz", output=pair / "scores")
    assert (pair / "scores" / "summary.json").is_file()
    assert default_output_dir(pair / "pred.nii.gz", pair / "gt.nii.gz") == (pair / "pred_evaluation").resolve()
    # a reference file in a dataset's labels folder: that folder stays free of scores
    (pair / "images").mkdir()
    (pair / "labels").mkdir()
    shutil.copy(gt / "case_b.nii.gz", pair / "labels" / "case_b.nii.gz")
    with pytest.raises(DataError, match="is the reference folder"):
        evaluate(pair / "pred.nii.gz", pair / "labels" / "case_b.nii.gz", output=pair / "labels")


def test_default_output_is_never_inside_the_reference(tmp_path):
    for folder in ("p", "q", "gt/pred", "preds", "evaluation"):
        (tmp_path / folder).mkdir(parents=True)
    assert default_output_dir(tmp_path / "p", tmp_path / "q") == (tmp_path / "p_evaluation").resolve()
    # predictions inside the reference folder: the results go beside the reference folder
    assert (
        default_output_dir(tmp_path / "gt" / "pred", tmp_path / "gt")
        == (tmp_path / "pred_evaluation").resolve()
    )
    # one predicted file: named after its case
    assert default_output_dir(tmp_path / "p" / "case_a.nii.gz", tmp_path / "q" / "case_a.nii.gz") == (
        tmp_path / "p" / "case_a_evaluation"
    ).resolve()


def test_two_prediction_folders_in_one_parent_keep_their_own_results(nifti_cases, tmp_path):
    pred, gt = nifti_cases
    other = tmp_path / "other_pred"
    other.mkdir()
    for path in pred.iterdir():  # the same cases, case_b left empty: its scores differ from pred's
        other.joinpath(path.name).write_bytes(path.read_bytes())
    _write_nifti(np.zeros(SHAPE, np.uint8), other / "case_b.nii.gz")
    first, second = evaluate(pred, gt), evaluate(other, gt)
    assert first["classes"]["1"]["dice"]["mean"] != second["classes"]["1"]["dice"]["mean"]
    for folder, summary in ((pred, first), (other, second)):
        written = json.loads((tmp_path / f"{folder.name}_evaluation" / "summary.json").read_text())
        assert written["pred"] == str(folder)
        assert written["classes"]["1"]["dice"]["mean"] == summary["classes"]["1"]["dice"]["mean"]


def test_cli_reports_a_missing_prediction_as_one_line(nifti_cases, capsys):
    from usema.cli import main

    pred, gt = nifti_cases
    assert main(["evaluate", str(pred), str(gt), "--tolerance-mm", "2"]) == 0
    (pred / "case_a.nii.gz").unlink()
    assert main(["evaluate", str(pred), str(gt)]) == 2
    assert "no prediction for case 'case_a'" in capsys.readouterr().err


@pytest.mark.shared_data
def test_real_hippocampus_and_nuclei_labels_score_perfectly_against_themselves(
    hippocampus_dir, dsb2018_dir, tmp_path
):
    label = hippocampus_dir / "labelsTr" / "hippocampus_001.nii.gz"
    summary = evaluate(label, label, output=tmp_path / "hippo")
    assert summary["mean"] == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    assert sorted(summary["classes"]) == ["1", "2"]

    with (dsb2018_dir / "manifest.csv").open() as handle:
        first = next(csv.DictReader(handle))
    nuclei = dsb2018_dir / first["label"]
    summary = evaluate(nuclei, nuclei, output=tmp_path / "dsb", instance=True)
    assert summary["instance"]["tp"] == int(first["num_instances"])
    assert summary["instance"]["f1_pooled"] == 1.0


def test_a_strict_evaluation_lists_the_missing_cases_and_chill_scores_the_predicted_ones(
    nifti_cases, tmp_path
):
    pred, gt = nifti_cases
    _write_nifti(np.zeros(SHAPE, np.uint8), gt / "case_c.nii.gz")
    (pred / "case_b.nii.gz").unlink()
    message = (
        r"no prediction for case 'case_b' in .*pred, nor for 1 more: case_c; --chill scores the predicted"
    )
    with pytest.raises(DataError, match=message):
        evaluate(pred, gt)
    with pytest.warns(UserWarning, match="2 of 3 reference cases have no prediction"):
        summary = evaluate(pred, gt, output=tmp_path / "chill", chill=True)
    assert summary["num_cases"] == 1
    assert sorted(_read_rows(tmp_path / "chill" / "per_case.csv")) == [("case_a", "1")]
    (pred / "case_a.nii.gz").unlink()
    with pytest.raises(DataError, match="no prediction for case 'case_a'"):
        evaluate(pred, gt, chill=True)  # nothing predicted: nothing to score


def test_unmatched_names_are_shown_beside_the_missing_cases(tmp_path):
    """Predictions named otherwise than the references: the error names them, and the reference a prediction
    differs from only in letter case, so the cause shows without --chill."""
    mask = np.zeros((6, 6), np.uint8)
    mask[1:4, 1:4] = 1
    for case in range(5):
        _write_png(mask, tmp_path / "gt" / f"case{case}.png")
    for name in ("CASE0.png", "case1.png", "other.png"):
        _write_png(mask, tmp_path / "pred" / name)
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    with pytest.raises(DataError) as failure:
        evaluate(pred, gt)
    assert str(failure.value) == (
        f"{gt / 'case0.png'}: no prediction for case 'case0' in {pred}, nor for 3 more: case2, case3, case4; "
        "predictions without a reference: CASE0.png (reference 'case0' differs only in letter case), other.png; "
        "--chill scores the predicted cases only"
    )
    with pytest.warns(UserWarning) as warned:
        assert evaluate(pred, gt, output=tmp_path / "chill", chill=True)["num_cases"] == 1
    assert str(warned[-1].message) == (
        f"2 predictions in {pred} have no reference in {gt} and are not scored: CASE0.png (reference 'case0' "
        "differs only in letter case), other.png"
    )
    # nothing matches: the error still says what PRED holds, a few files and how many more
    (pred / "case1.png").unlink()
    for index in range(6):
        _write_png(mask, pred / f"test_{index}.png")
    with pytest.raises(DataError, match=r"predictions without a reference: CASE0.png \(reference 'case0' differs only "
                                        r"in letter case\), other.png, test_0.png, test_1.png, test_2.png and 3 "
                                        r"others$"):
        evaluate(pred, gt, chill=True)
    for path in pred.iterdir():
        path.unlink()
    (pred / "CASE0.npz").write_bytes(b"")
    with pytest.raises(DataError, match=rf"nor for 4 more: case1, case2, case3, case4; {pred} holds no segmentation "
                                        r"files \(\.nii\.gz, "):
        evaluate(pred, gt)


def test_predicted_labels_that_the_reference_does_not_declare_are_warned_about(nifti_cases, tmp_path):
    pred, gt = nifti_cases
    stray = np.zeros(SHAPE, np.uint8)
    stray[0, 0, 0] = 7
    _write_nifti(stray, pred / "case_a.nii.gz")
    with pytest.warns(
        UserWarning, match=r"label values \[7\] that the reference labels \[1, 2\] do not declare"
    ):
        evaluate(pred, gt, output=tmp_path / "found")
    # declared labels (dataset.json's) are the classes: a class absent from these references is not stray
    _write_nifti(np.full(SHAPE, 3, np.uint8), pred / "case_a.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(pred, gt, output=tmp_path / "declared", labels={0: "bg", 1: "a", 2: "b", 3: "c"})


def test_cli_chill(nifti_cases, tmp_path, capsys):
    from usema.cli import main

    pred, gt = nifti_cases
    (pred / "case_a.nii.gz").unlink()
    assert main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "s"), "--chill"]) == 0
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["num_cases"] == 1


# nnU-Net's ignore label: reference voxels so labelled are scored nowhere
IGNORE_SHAPE = (10, 10, 6)


@pytest.fixture
def ignore_cases(tmp_path):
    """A reference whose left half is not annotated (3 = ignore) and a prediction that is right on the
    annotated half and wrong (class 1) on the other."""
    reference = np.zeros(IGNORE_SHAPE, np.uint8)
    reference[6:9, 2:8, 1:5] = 1
    reference[:5] = 3
    prediction = np.where(reference == 3, 1, reference)
    _write_nifti(reference, tmp_path / "data" / "labelsTs" / "c.nii.gz", spacing=(1.0, 1.0, 1.0))
    _write_nifti(prediction, tmp_path / "pred" / "c.nii.gz", spacing=(1.0, 1.0, 1.0))
    return tmp_path


def test_ignored_voxels_are_scored_nowhere(ignore_cases):
    summary = evaluate(ignore_cases / "pred", ignore_cases / "data" / "labelsTs", output=ignore_cases / "eval",
                       ignore_label=3)
    assert list(summary["classes"]) == ["1"]  # the ignore value is no class
    assert summary["classes"]["1"]["dice"]["mean"] == pytest.approx(1.0)
    assert summary["ignore_label"] == 3

    counted = evaluate(ignore_cases / "pred", ignore_cases / "data" / "labelsTs", output=ignore_cases / "eval2",
                       labels={1: "a"})
    assert counted["classes"]["1"]["dice"]["mean"] == pytest.approx(2 * 72 / (72 + 72 + 300))


def test_the_dataset_json_beside_the_reference_names_it(ignore_cases, capsys):
    (ignore_cases / "data" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "ignore": 3}, "file_ending": ".nii.gz"}))
    from usema.cli import main

    reference = ignore_cases / "data" / "labelsTs"
    assert main(["evaluate", str(ignore_cases / "pred"), str(reference), "-o", str(ignore_cases / "e")]) == 0
    summary = json.loads((ignore_cases / "e" / "summary.json").read_text())
    assert summary["ignore_label"] == 3 and summary["classes"]["1"]["dice"]["mean"] == pytest.approx(1.0)


def _masks(folder, values):
    """PNG masks a.png and b.png holding a square of `values[0]` and `values[1]`."""
    for name, value in zip("ab", values, strict=True):
        mask = np.zeros((8, 8), dtype=np.int64)
        mask[2:6, 2:6] = value
        _write_png(mask, folder / f"{name}.png")
    return folder


def test_predictions_and_references_that_share_no_value_stop_with_what_was_found(tmp_path, capsys):
    from usema.cli import main

    pred, gt = _masks(tmp_path / "pred", (1, 1)), _masks(tmp_path / "gt", (255, 255))
    with pytest.raises(UsemaError, match=r"predictions in .*pred hold label values \[1\] and the references in "
                                         r".*gt hold \[255\]: no value in common, so every Dice would be 0"):
        evaluate(pred, gt)
    assert not (tmp_path / "evaluation").exists()  # nothing scored, nothing written
    assert main(["evaluate", str(pred), str(gt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("usema evaluate: error: the predictions in") and "--run RUN" in err[0]
    # values in common: scored, the stray value warned about
    _masks(pred, (255, 1))
    with pytest.warns(UserWarning, match=r"label values \[1\] that the reference labels \[255\] do not declare"):
        assert evaluate(pred, gt)["classes"]["255"]["dice"]["mean"] == 0.5


def _plan_file(folder, label_values, label_mode="binary"):
    """A run folder whose plans.json records `label_values` for the classes background and lesion."""
    folder.mkdir()
    plan = {
        "version": 4,
        "dataset": {"path": "/d", "format": "folder2d", "spatial_dims": 2, "num_channels": 1,
                    "label_mode": label_mode, "num_classes": 2, "cases": ["a", "b"],
                    "labels": {"0": "background", "1": "lesion"}, "label_values": label_values},
        "target_spacing": [1.0, 1.0], "normalization": {"scheme": "zscore_per_image"},
        "patch_size": [8, 8], "batch_size": 2, "model": {"name": "usema"},
        "training": {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "iters_per_epoch": 1},
    }
    (folder / "plans.json").write_text(json.dumps(plan))
    return folder


def test_given_its_run_the_classes_are_the_plans_label_values_under_its_names(tmp_path):
    from usema.cli import main

    pred, gt = _masks(tmp_path / "pred", (255, 0)), _masks(tmp_path / "gt", (255, 255))
    run = _plan_file(tmp_path / "run", [0, 255])
    summary = evaluate(pred, gt, output=tmp_path / "scores", run=run)
    assert summary["classes"] == {"255": {**summary["classes"]["255"], "name": "lesion"}}
    assert summary["classes"]["255"]["dice"]["mean"] == 0.5
    assert main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "cli"), "--run", str(run / "plans.json")]) == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["classes"] == summary["classes"]
    # a run that predicts 0/1 (as plans made before label values did) against 0/255 references
    with pytest.raises(UsemaError, match=r"references in .*gt hold label values \[255\] and the classes of "
                                         r".*old.plans\.json have the values \[1\]"):
        evaluate(pred, gt, output=tmp_path / "old_scores", run=_plan_file(tmp_path / "old", [0, 1]))
