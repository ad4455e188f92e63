"""`usema demo` end to end on a few steps: every artefact is written, the scores are real numbers, and a rerun
into the same folder finds the training finished and predicts again."""

import json

import pytest

from usema.cli import main


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path, monkeypatch):
    import usema.demo as demo

    # two steps instead of 300: the test checks the plumbing, the README's run checks the Dice
    monkeypatch.setitem(demo.DEMO_TRAINING, "iters_per_epoch", 2)
    monkeypatch.setitem(demo.DEMO_TRAINING, "epochs", 1)
    monkeypatch.setitem(demo.DEMO_TRAINING, "patch_size", [16, 16, 16])
    monkeypatch.setitem(demo.DEMO_TRAINING, "batch_size", 2)
    monkeypatch.setitem(demo.DEMO_TRAINING, "val_max_cases", 1)
    assert main(["demo", "-o", str(tmp_path / "demo"), "--report", str(tmp_path / "demo.md")]) == 0
    out = tmp_path / "demo"
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["num_cases"] == 5  # the held-out fold of 24 phantoms, 5 folds
    assert set(summary["classes"]) == {"1", "2"}
    assert all(0.0 <= entry["dice"]["mean"] <= 1.0 for entry in summary["classes"].values())
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 5
    assert len(list((out / "predictions" / "overlays").glob("*.png"))) == 5
    assert (out / "run" / "fold_0" / "progress.png").is_file()
    assert (out / "run" / "fold_0" / "checkpoint_best.pt").is_file()
    report = (tmp_path / "demo.md").read_text()
    assert "Command: `usema demo" in report
    assert f"| mean | {summary['mean']['dice']:.3f} |" in report

    checkpoint = out / "run" / "fold_0" / "checkpoint_latest.pt"
    trained_at = checkpoint.stat().st_mtime_ns
    assert main(["demo", "-o", str(out)]) == 0  # a rerun: nothing left to train, predictions replaced
    assert checkpoint.stat().st_mtime_ns == trained_at
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 5
