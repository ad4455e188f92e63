"""The files of an accuracy study: a record per (model, fold), one protocol, one commit."""

import pytest

from usema.bench.accuracy_report import ReportFiles, report_metrics
from usema.errors import UsemaError

PROTOCOL = {"steps": 600, "budget_minutes": None, "patch_size": [8, 8], "batch_size": 2, "optimizer": "adamw",
            "lr": 0.003, "precision": "fp32", "iters_per_epoch": 100, "folds": 5, "split_seed": 0, "tta": False,
            "target_spacing": [1.0, 1.0], "models": {"usema": "usema"}, "steps_of": {"usema": 600}}


def record(model, fold, dice, commit="abc"):
    return {"row": {"model": model, "fold": fold, "steps": 600, "commit": commit},
            "per_case": [{"model": model, "fold": fold, "case": f"c{i}", "class": 1, "dice": dice} for i in range(3)],
            "curve": [{"model": model, "fold": fold, "epoch": 1, "step": 100, "val_dice": dice}],
            "network_settings": {"head_dim": 8}, "provenance": {"command": "usema bench accuracy", "commit": commit}}


def test_a_record_is_added_once_per_model_and_fold(tmp_path):
    files = ReportFiles(tmp_path, "x")
    files.add_record(record("usema", 0, 0.5), PROTOCOL)
    files.add_record(record("usema", 1, 0.6), PROTOCOL)
    files.add_record(record("usema", 0, 0.7), PROTOCOL)  # made again: replaces the first
    assert [(r["model"], r["fold"]) for r in files.rows()] == [("usema", "1"), ("usema", "0")]
    assert sorted(float(r["dice"]) for r in files.per_case()) == [0.6] * 3 + [0.7] * 3
    assert len(files.curves()) == 2 and files.has_row("usema", 0) and not files.has_row("usema", 2)
    meta = files.meta()
    assert meta["protocol"]["steps"] == 600 and set(meta["provenance"]) == {"usema/fold_0", "usema/fold_1"}
    assert report_metrics(files.per_case()) == ("dice",)
    assert report_metrics([{"dice": "1", "f1": "0.5"}]) == ("dice", "f1")


def test_another_protocol_or_commit_is_refused(tmp_path):
    files = ReportFiles(tmp_path, "x")
    files.check_protocol(PROTOCOL)  # nothing stored yet
    files.add_record(record("usema", 0, 0.5), PROTOCOL)
    files.check_protocol({**PROTOCOL, "models": {"nnunet": "nnunet"}})  # another model joins the same protocol
    with pytest.raises(UsemaError, match=r"steps 600 \(now 800\)"):
        files.check_protocol({**PROTOCOL, "steps": 800})
    # a control at equal compute keeps the steps it began with, whatever a later step cost says
    compute = {**PROTOCOL, "steps_of": {"usema": 600, "nnunet@compute": 690}}
    files.add_record(record("nnunet@compute", 0, 0.5), compute)
    files.check_protocol({**compute, "steps_of": {"usema": 600, "usema-window": 600}})  # a model joins
    with pytest.raises(UsemaError, match=r"nnunet@compute has 690 steps in this study \(now 640\)"):
        files.check_protocol({**PROTOCOL, "steps_of": {"usema": 600, "nnunet@compute": 640}})
    files.check_commit("abc")
    with pytest.raises(UsemaError, match="trained at commit abc, this checkout is def"):
        files.check_commit("def")
