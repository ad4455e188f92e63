"""The accuracy benchmark's records: which invocation made each row, and the means over seeds."""

import json

from usema.bench.accuracy_report import load_history, record_row, seed_summary


def test_each_row_is_credited_to_the_invocation_that_made_it(tmp_path):
    path = tmp_path / "accuracy_x.json"
    history = load_history(path, tmp_path / "accuracy_x.md", rows=[])
    assert history["invocations"] == []
    first = {"command": "usema bench accuracy --seeds 0", "date": "d1", "machine": {"description": "m"}}
    record_row(history, first, "usema", 0)
    record_row(history, first, "usema-nosema", 0)
    again = {**first, "command": "usema bench accuracy --seeds 0 1", "date": "d2"}
    record_row(load_history(path, tmp_path / "accuracy_x.md", rows=[]), again, "usema", 0)  # the row made again
    saved = json.loads(path.read_text())["invocations"]
    assert [(inv["command"], inv["rows"]) for inv in saved] == [
        ("usema bench accuracy --seeds 0", [["usema-nosema", 0]]),
        ("usema bench accuracy --seeds 0 1", [["usema", 0]]),
    ]


def test_means_and_spread_over_seeds_per_model():
    rows = [{"model": "usema", "seed": 0, "iterations": 100, "mean_dice": 0.80},
            {"model": "usema", "seed": 1, "iterations": 110, "mean_dice": 0.84},
            {"model": "nnunet", "seed": 0, "iterations": 90, "mean_dice": 0.70}]
    summary = {entry["model"]: entry for entry in seed_summary(rows)}
    assert summary["usema"] == {"model": "usema", "seeds": "0 1", "iterations": "105 ± 7",
                                "mean_dice": "0.820 ± 0.028"}
    assert summary["nnunet"]["mean_dice"] == "0.700" and summary["nnunet"]["seeds"] == "0"
    assert seed_summary(rows[2:]) == []  # no model with two seeds: no table
