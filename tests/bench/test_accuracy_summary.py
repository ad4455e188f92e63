"""The one-screen summary over every study of a results folder, from the studies' files alone."""

import json

from usema.bench.accuracy_report import ReportFiles, _write_csv
from usema.bench.accuracy_summary import write_summary


def write_study(output, name, folds, gain, steps=600):
    files = ReportFiles(output, name)
    output.mkdir(exist_ok=True)
    rows, per_case = [], []
    for fold in range(folds):
        for model, base in (("usema", 0.80 + gain), ("usema-nosema", 0.80), ("nnunet", 0.80 + gain)):
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
    text = write_summary(tmp_path).read_text()
    lines = text.splitlines()
    assert "| dataset | usema | usema-nosema | nnunet | usema vs usema-nosema | usema vs nnunet |" in lines[2]
    hippocampus = next(line for line in lines if line.startswith("| hippocampus |"))
    assert "| 0.823 ± 0.000 (5) | 0.802 ± 0.000 (5) |" in hippocampus
    assert "| better (+0.020 [+0.020, +0.020]) | no difference (+0.000 [+0.000, +0.000]) | 600 | 12.0 (usema, median) |" in hippocampus
    assert "- hippocampus: USEMA is better than usema-nosema; no difference against nnunet in Dice." in lines
    kvasir = next(line for line in lines if line.startswith("| kvasir_seg |"))
    assert "| pending, 2 of 5 folds (+0.000 [+0.000, +0.000]) |" in kvasir and "better" not in kvasir
    assert "- kvasir_seg: 2 of 5 folds so far; no verdict until every fold is in (the interval needs the folds' spread)." in lines
