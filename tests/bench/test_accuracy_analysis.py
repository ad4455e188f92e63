"""Paired per-case comparisons with bootstrap intervals, and validation Dice against training time."""

import csv

import pytest

from usema.bench.accuracy_analysis import (
    comparison_labels,
    comparison_lines,
    curve_lines,
    learning_curve,
    minutes_to_reach,
    paired_comparison,
)


def write_cases(run_dir, scores):
    """per_case.csv with two classes per case whose mean is the given score."""
    folder = run_dir / "evaluation"
    folder.mkdir(parents=True)
    with (folder / "per_case.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "class", "name", "dice", "nsd", "hd95"])
        for case, score in scores.items():
            writer.writerow([case, 1, "a", score - 0.05, 1, 1])
            writer.writerow([case, 2, "b", score + 0.05, 1, 1])


def test_paired_differences_their_interval_and_verdict(tmp_path):
    cases = [f"c{i}" for i in range(20)]
    write_cases(tmp_path / "usema" / "seed_0", {c: 0.80 + 0.01 * (i % 3) for i, c in enumerate(cases)})
    write_cases(tmp_path / "usema" / "seed_1", {c: 0.82 for c in cases})
    write_cases(tmp_path / "usema-nosema" / "seed_0", {c: 0.78 for c in cases})
    write_cases(tmp_path / "usema-nosema" / "seed_1", {c: 0.79 for c in cases})
    write_cases(tmp_path / "nnunet" / "seed_0", {c: 0.80 + (0.05 if i % 2 else -0.05) for i, c in enumerate(cases)})

    better = paired_comparison(tmp_path, "usema", "usema-nosema", [0, 1])
    # seed 0: 0.02 + 0.01 * (i % 3) on average 0.0295; seed 1: 0.03; per case the mean of the two
    assert better["cases"] == 20 and better["seeds"] == [0, 1]
    assert better["per_seed"][1] == pytest.approx(0.03)
    assert better["mean"] == pytest.approx((0.0295 + 0.03) / 2, abs=1e-4)
    assert 0 < better["low"] <= better["mean"] <= better["high"] and better["verdict"] == "better"
    level = paired_comparison(tmp_path, "usema", "nnunet", [0, 1])  # only seed 0 is shared: +-0.05 around 0.01
    assert level["seeds"] == [0] and level["low"] < 0 < level["high"] and level["verdict"] == "no difference"
    assert paired_comparison(tmp_path, "usema", "swinunetr", [0]) is None


def test_which_models_are_compared():
    assert comparison_labels(["usema", "usema-nosema", "nnunet"]) == [("usema", "usema-nosema"), ("usema", "nnunet")]
    assert comparison_labels(["usema@all", "usema@bottleneck", "usema-nosema"]) == [
        ("usema@all", "usema-nosema"), ("usema@bottleneck", "usema-nosema")]


def test_report_lines_name_the_comparison_and_the_verdict(tmp_path):
    write_cases(tmp_path / "usema" / "seed_0", {"a": 0.5, "b": 0.6, "c": 0.55})
    write_cases(tmp_path / "usema-window" / "seed_0", {"a": 0.7, "b": 0.8, "c": 0.75})
    rows = [{"model": "usema", "seed": "0"}, {"model": "usema-window", "seed": "0"}]
    lines = comparison_lines(tmp_path, rows)
    assert lines[-1].startswith("| usema - usema-window | dice | 3 | 0 | -0.2000 | [-0.2000, -0.2000] |")
    assert lines[-1].endswith("| worse |")


def test_curves_and_minutes_to_reach_a_dice(tmp_path):
    fold = tmp_path / "usema" / "seed_0" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "train_log.csv").write_text(
        "epoch,train_loss,val_dice,lr,seconds\n1,1.0,0.60,0.003,120\n2,0.8,0.81,0.002,120\n3,0.7,0.86,0.001,60\n")
    curve = learning_curve(fold)
    assert curve == [(2.0, 0.60), (4.0, 0.81), (5.0, 0.86)]
    assert minutes_to_reach(curve, 0.8) == 4.0 and minutes_to_reach(curve, 0.9) is None
    lines = curve_lines(tmp_path, [{"model": "usema", "seed": "0"}], 0, tmp_path / "accuracy_x.png")
    assert "| usema seed 0 | 4.0 | 4.0 | 5.0 | - | 0.860 at 5.0 min |" in lines
    assert (tmp_path / "accuracy_x.png").read_bytes()[:4] == b"\x89PNG"
