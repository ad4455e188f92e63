import csv
import json

import pytest

from usema.evaluation.report import format_table, summarise, write_per_case_csv, write_summary_json

ROWS = [
    {"case": "a", "class": 1, "name": "liver", "dice": 0.8, "nsd": 0.5, "hd95": 2.0},
    {"case": "a", "class": 2, "name": "tumour", "dice": 0.2, "nsd": 0.1, "hd95": 10.0},
    {"case": "b", "class": 1, "name": "liver", "dice": 0.6, "nsd": 0.7, "hd95": 4.0},
    {"case": "b", "class": 2, "name": "tumour", "dice": 0.4, "nsd": 0.3, "hd95": 6.0},
]


def test_summary_holds_mean_and_std_per_class_and_the_mean_over_classes():
    summary = summarise(ROWS, ("dice", "nsd", "hd95"), {1: "liver", 2: "tumour"}, mode="semantic")
    assert summary["num_cases"] == 2
    assert summary["mode"] == "semantic"
    liver, tumour = summary["classes"]["1"], summary["classes"]["2"]
    assert liver["name"] == "liver"
    assert liver["dice"]["mean"] == pytest.approx((0.8 + 0.6) / 2)
    assert liver["dice"]["std"] == pytest.approx(0.1)  # population std of {0.8, 0.6}
    assert tumour["hd95"]["mean"] == pytest.approx(8.0)
    assert tumour["hd95"]["std"] == pytest.approx(2.0)
    assert summary["mean"]["dice"] == pytest.approx((0.7 + 0.3) / 2)
    assert summary["mean"]["hd95"] == pytest.approx((3.0 + 8.0) / 2)


def test_count_columns_are_totalled():
    rows = [{"case": c, "class": 1, "tp": tp, "fp": 1, "fn": 0} for c, tp in (("a", 3), ("b", 5))]
    summary = summarise(rows, ("tp", "fp", "fn"), {1: "foreground"})
    assert summary["classes"]["1"]["tp"]["total"] == 8
    assert summary["classes"]["1"]["fp"]["total"] == 2


def test_outputs_are_written_whole_and_leave_no_temporary_files(tmp_path):
    summary = summarise(ROWS, ("dice", "nsd", "hd95"), {1: "liver", 2: "tumour"})
    csv_path = write_per_case_csv(ROWS, tmp_path / "out" / "per_case.csv")
    json_path = write_summary_json(summary, tmp_path / "out" / "summary.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["per_case.csv", "summary.json"]
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == ["a", "a", "b", "b"]
    assert float(rows[1]["hd95"]) == 10.0
    assert json.loads(json_path.read_text())["classes"]["2"]["dice"]["mean"] == pytest.approx(0.3)


def test_summary_with_nan_is_refused(tmp_path):
    with pytest.raises(ValueError):
        write_summary_json({"mean": {"dice": float("nan")}}, tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []


def test_table_lists_each_class_and_the_mean():
    summary = summarise(ROWS, ("dice", "nsd", "hd95"), {1: "liver", 2: "tumour"})
    lines = format_table(summary, ("dice", "nsd", "hd95")).splitlines()
    assert lines[0].split() == ["class", "dice", "nsd", "hd95"]
    assert lines[2].startswith("liver") and "0.7000 +- 0.1000" in lines[2]
    assert lines[-1].split() == ["mean", "0.5000", "0.4000", "5.5000"]
