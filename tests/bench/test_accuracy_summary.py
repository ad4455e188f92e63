"""The one-screen summary over every study of a results folder, from the studies' files alone."""

import json

from usema.bench.accuracy_report import ReportFiles, _write_csv
from usema.bench.accuracy_summary import answer_line, dataset_outcome, write_summary


def write_study(output, name, folds, gain, steps=600, ablation=(), nnunet_gain=None):
    files = ReportFiles(output, name)
    output.mkdir(exist_ok=True)
    rows, per_case = [], []
    nnunet = 0.80 + (gain if nnunet_gain is None else nnunet_gain)
    # the control first, as a study whose first scored run was the control's writes them
    models = (("usema-nosema", 0.80), ("usema", 0.80 + gain), ("nnunet", nnunet), *ablation)
    for fold in range(folds):
        for model, base in models:
            rows.append({"model": model, "fold": fold, "commit": "abc", "train_minutes": 10.0 + fold})
            per_case += [{"model": model, "fold": fold, "case": f"{fold}-{i}", "class": 1, "dice": base + 0.001 * i}
                         for i in range(6)]
    _write_csv(files.rows_csv, rows)
    _write_csv(files.per_case_csv, per_case)
    protocol = {"steps": steps, "budget_minutes": None, "folds": 5}
    files.meta_json.write_text(json.dumps({"protocol": protocol, "network_settings": {}, "provenance": {}}))


def test_a_row_per_dataset_with_means_verdicts_and_a_sentence(tmp_path):
    assert write_summary(tmp_path) is None
    write_study(tmp_path, "hippocampus", 5, 0.02)
    write_study(tmp_path, "kvasir_seg", 2, 0.0)
    (tmp_path / "step_cost_kvasir_seg.json").write_text(json.dumps({"seconds_per_step": {"usema": 1.5}}))
    text = write_summary(tmp_path).read_text()
    lines = text.splitlines()
    assert "| dataset | usema | usema-nosema | nnunet | usema vs usema-nosema | usema vs nnunet |" in lines[4]
    hippocampus = next(line for line in lines if line.startswith("| hippocampus |"))
    assert "| 0.823 ± 0.000 (5) | 0.802 ± 0.000 (5) |" in hippocampus
    # no step cost measured: the runs' wall clock, said as such
    assert ("| better (+0.0200 [+0.0200, +0.0200]) | no difference (+0.0000 [+0.0000, +0.0000]) | 600 | "
            "12.0 min wall clock (usema, median) |") in hippocampus
    assert ("- hippocampus, at 600 steps (how far from its plateau: the curves in its report): USEMA is better than "
            "usema-nosema (+0.0200); not detectably different from nnunet (+0.0000) in mean Dice.") in lines
    kvasir = next(line for line in lines if line.startswith("| kvasir_seg |"))
    assert "| pending, 2 of 5 folds (+0.0000 [+0.0000, +0.0000]) |" in kvasir and "better" not in kvasir
    assert kvasir.endswith("| 600 | 15 min of one core (1.50 s per step) |")  # 600 steps x 1.5 s
    assert ("- kvasir_seg: 2 of 5 folds of every model so far; no verdict until every fold is in (the interval "
            "needs the folds' spread).") in lines
    assert lines[0] == ("Answer: **Not yet settled.** 1 of 4 datasets has every fold in; USEMA is better than every "
                        "control on 0 and worse than a control on 0 (the aim: better than every control on at least 2 "
                        "of the 4 datasets, worse on none).")


def test_while_a_study_is_under_way_its_columns_compare_the_same_folds(tmp_path):
    write_study(tmp_path, "kvasir_seg", 1, 0.0)
    files = ReportFiles(tmp_path, "kvasir_seg")  # usema's fold 1 is in, its controls' not yet
    _write_csv(files.rows_csv, [*files.rows(), {"model": "usema", "fold": 1, "commit": "abc", "train_minutes": 9}])
    _write_csv(files.per_case_csv, [*files.per_case(), *({"model": "usema", "fold": 1, "case": f"1-{i}",
                                                          "class": 1, "dice": 0.9} for i in range(6))])
    lines = write_summary(tmp_path).read_text().splitlines()
    kvasir = next(line for line in lines if line.startswith("| kvasir_seg |"))
    assert kvasir.startswith("| kvasir_seg | 0.802 (1) | 0.802 (1) | 0.802 (1) | pending, 1 of 5 folds (+0.0000, "
                             "no interval from 1 fold) |")
    assert "- kvasir_seg: 1 of 5 folds of every model so far; no verdict until every fold is in" in lines[-1]


def test_an_ablation_stays_in_its_report_and_does_not_change_the_answer(tmp_path):
    # USEMA better than both controls on two datasets and level with usema-window: the ablation's "no
    # difference" must neither add a column nor count as a control USEMA failed to beat
    for name in ("hippocampus", "dsb2018"):
        write_study(tmp_path, name, 5, 0.02, nnunet_gain=0.01, ablation=(("usema-window", 0.82),))
    lines = write_summary(tmp_path).read_text().splitlines()
    assert "| dataset | usema | usema-nosema | nnunet | usema vs usema-nosema | usema vs nnunet |" in lines[4]
    assert not any("usema-window" in line for line in lines)
    dsb = next(line for line in lines if line.startswith("| dsb2018 |"))
    assert "| better (+0.0200 [+0.0200, +0.0200]) | better (+0.0100 [+0.0100, +0.0100]) |" in dsb
    assert lines[0].startswith("Answer: **Yes so far**; the pending datasets can still turn it. 2 of 4 datasets "
                               "have every fold in; USEMA is better than every control on 2 (hippocampus, dsb2018)")


def test_the_outcome_of_a_dataset_waits_for_every_fold_and_needs_every_control_beaten():
    better = {"verdict": "better", "folds": [0, 1, 2, 3, 4]}
    worse = {"verdict": "worse", "folds": [0, 1, 2, 3, 4]}
    level = {"verdict": "no difference", "folds": [0, 1, 2, 3, 4]}
    assert dataset_outcome([better, {**worse, "folds": [0, 1]}], 5) == "pending"
    assert dataset_outcome([], 5) == "pending"
    assert dataset_outcome([better, better], 5) == "better"
    assert dataset_outcome([better, level], 5) == "not better"
    assert dataset_outcome([better, worse], 5) == "worse"
    assert dataset_outcome([{**better, "verdict": "mixed commits"}, better], 5) == "not better"


def test_the_answer_follows_the_rule_two_datasets_better_none_worse():
    four = ("a", "b", "c", "d")
    yes = answer_line({"a": "better", "b": "better", "c": "not better", "d": "not better"}, four)
    assert yes.startswith("Answer: **Yes.** 4 of 4 datasets have every fold in; USEMA is better than every control "
                          "on 2 (a, b) and worse than a control on 0 (")
    assert answer_line({"a": "better", "b": "better"}, four).startswith("Answer: **Yes so far**")
    assert answer_line({"a": "better", "b": "better", "c": "worse"}, four).startswith(
        "Answer: **No.** 3 of 4 datasets have every fold in; USEMA is better than every control on 2 (a, b) and "
        "worse than a control on 1 (c) (")
    # one dataset left cannot make two wins out of none
    assert answer_line({"a": "not better", "b": "not better", "c": "not better"}, four).startswith("Answer: **No.**")
    assert answer_line({"a": "better", "b": "not better", "c": "not better"}, four).startswith(
        "Answer: **Not yet settled.** 3 of 4")
    # a study outside the planned datasets counts too
    assert "of 5 datasets" in answer_line({"e": "better"}, four)
