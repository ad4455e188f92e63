"""`usema bench accuracy` on tiny settings: one row per model and fold at equal steps, its files re-deriving the
report, runs claimed so two processes can share a study, commits kept apart."""

import csv
import json

import pytest

from usema.cli import main
from usema.data.phantoms import make_phantom_dataset
from usema.planning import Plans
from usema.utils.lock import folder_lock

TINY = ["--plan", "patch_size=[16,16,16]", "batch_size=2", "iters_per_epoch=2", "val_max_cases=1",
        'network_settings={"base_features": 8, "max_features": 16, "blocks_per_stage": 1, "head_dim": 8}']


def read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_folds_at_equal_steps_their_files_and_a_report_rederived_from_them(tmp_path, capsys):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=3, num_cases=10, shape=(20, 24, 20), seed=3)
    results, runs = tmp_path / "results", tmp_path / "runs"
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "usema", "--folds", "0", "1",
            "--steps", "4", "--runs-dir", str(runs), "-o", str(results), "--device", "cpu", "--threads", "1",
            "--precision", "fp32", "--network-settings", 'usema={"head_dim": 16}', *TINY]
    assert main(args) == 0
    rows = read_csv(results / "accuracy_phantoms.csv")
    assert [(r["model"], r["fold"], r["seed"]) for r in rows] == [
        ("usema-nosema", "0", "0"), ("usema", "0", "0"), ("usema-nosema", "1", "1"), ("usema", "1", "1")]
    for row in rows:
        assert int(row["steps"]) == 4 and int(row["val_cases"]) == 2 and len(row["commit"]) >= 40
        assert float(row["steps_per_second"]) > 0 and float(row["load_average"]) >= 0
    # each fold holds out other cases, the same for both models
    per_case = read_csv(results / "per_case_phantoms.csv")
    held_out = {(r["model"], r["fold"]): {p["case"] for p in per_case if (p["model"], p["fold"]) == (r["model"], r["fold"])}
                for r in rows}
    assert held_out[("usema", "0")] == held_out[("usema-nosema", "0")] != held_out[("usema", "1")]
    assert {r["step"] for r in read_csv(results / "curves_phantoms.csv")} == {"2", "4"}
    meta = json.loads((results / "accuracy_phantoms.json").read_text())
    assert meta["protocol"]["steps"] == 4 and meta["protocol"]["precision"] == "fp32"
    assert meta["network_settings"]["usema"]["head_dim"] == 16 and meta["network_settings"]["usema-nosema"]["head_dim"] == 8
    assert meta["provenance"]["usema/fold_1"]["commit"] == rows[-1]["commit"]
    report = (results / "accuracy_phantoms.md").read_text()
    assert "4 optimizer steps per run" in report and "| usema - usema-nosema | dice | 2 | 4 |" in report
    assert "Commit: " in report and "cores (1 used by torch)" in report

    # the report from the files alone, without the runs
    (results / "accuracy_phantoms.md").unlink()
    (runs / "phantoms").rename(tmp_path / "elsewhere")
    assert main(["bench", "accuracy", "--dataset", str(data), "-o", str(results), "--report-only"]) == 0
    assert (results / "accuracy_phantoms.md").read_text() == report
    (tmp_path / "elsewhere").rename(runs / "phantoms")

    # a second call finds every row and trains nothing; another step count would mix protocols
    before = (results / "accuracy_phantoms.csv").read_text()
    assert main(args) == 0
    assert (results / "accuracy_phantoms.csv").read_text() == before
    assert main([*args[:args.index("--steps")], "--steps", "6", *args[args.index("--steps") + 2:]]) == 2
    assert "this study trains 4 steps, not 6" in capsys.readouterr().err

    # rows of another commit: refused, unless allowed
    edited = before.replace(rows[0]["commit"], "0" * 40, 1)
    (results / "accuracy_phantoms.csv").write_text(edited)
    assert main([*args, "--folds", "2"]) == 2
    assert "a comparison must not mix code" in capsys.readouterr().err
    assert not (runs / "phantoms" / "usema" / "run_fold_2").exists()


def test_a_run_claimed_by_another_process_is_skipped(tmp_path, capsys, monkeypatch):
    import usema.training.run_training as run_training

    trained = []

    def stopped_train(data, run_dir, fold, **kwargs):
        trained.append((run_dir.parent.name, fold))
        return {"interrupted": True, "stop_signal": 2, "checkpoint_latest": run_dir / "x.pt"}

    monkeypatch.setattr(run_training, "train", stopped_train)
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=5, shape=(24, 24), seed=1)
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "usema", "--folds", "3",
            "--steps", "2", "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"), "--device", "cpu",
            *TINY[:1], "iters_per_epoch=2"]
    with folder_lock(tmp_path / "runs" / "phantoms" / "usema-nosema" / "run_fold_3" / "bench_claim"):
        # the other process holds usema-nosema: this one goes on to usema, whose stop ends the invocation
        assert main(args) == 130
    assert trained == [("usema", 3)]
    assert "usema-nosema fold 3: claimed by another process, skipped" in capsys.readouterr().out
    assert not (tmp_path / "results" / "accuracy_phantoms.csv").exists()
    assert not list((tmp_path / "runs").rglob("bench_done.json"))


def test_a_run_resumes_only_at_the_commit_it_started_at(tmp_path, capsys, monkeypatch):
    import usema.bench.accuracy as accuracy
    import usema.training.run_training as run_training
    from usema.checkpoint import checkpoint_path

    def stopped_train(data, run_dir, fold, **kwargs):  # a run killed after its first checkpoint
        checkpoint_path(run_dir, "latest", fold).write_bytes(b"checkpoint")
        return {"interrupted": True, "stop_signal": 15, "checkpoint_latest": run_dir / "x.pt"}

    monkeypatch.setattr(run_training, "train", stopped_train)
    monkeypatch.setattr(accuracy, "git_commit", lambda: "a" * 40)
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=5, shape=(24, 24), seed=1)
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema", "--folds", "0", "--steps", "2",
            "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"), "--device", "cpu", *TINY[:1],
            "iters_per_epoch=2"]
    assert main(args) == 143
    fold = tmp_path / "runs" / "phantoms" / "usema" / "run_fold_0" / "fold_0"
    assert json.loads((fold / "bench_started.json").read_text()) == {"commit": "a" * 40}
    assert main(args) == 143  # resumed at the same commit
    monkeypatch.setattr(accuracy, "git_commit", lambda: "b" * 40)
    assert main(args) == 2
    assert (f"{fold}: this run started at commit {'a' * 40}, this checkout is {'b' * 40}: a run must not mix code"
            in capsys.readouterr().err)


def test_each_model_keeps_the_shared_plans_settings_it_takes(tmp_path, monkeypatch):
    import usema.training.run_training as run_training

    trained = {}

    def stopped_train(data, run_dir, **kwargs):
        plans = Plans.load(run_dir)
        plans.network.build()  # the model takes every setting its run's plan names
        trained[plans.model_name] = (plans.network_settings, plans.training.epochs)
        return {"interrupted": True, "stop_signal": 2, "checkpoint_latest": run_dir / "x.pt"}

    monkeypatch.setattr(run_training, "train", stopped_train)
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=3, num_cases=5, shape=(20, 24, 20), seed=1)
    shared = {"base_features": 8, "max_features": 16, "head_dim": 8}
    common = ["--dataset", str(data), "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"),
              "--device", "cpu", "--steps", "6", "--folds", "0", "--plan", "batch_size=2", "iters_per_epoch=3",
              f"network_settings={json.dumps({**shared, 'blocks_per_stage': 1})}"]
    # a stopped training ends the invocation: one per model, the first one plans
    assert main(["bench", "accuracy", "--models", "nnunet", *common,
                 "--network-settings", 'nnunet={"blocks_per_stage": 2}']) == 130
    for model in ("usema-nosema", "usema"):
        assert main(["bench", "accuracy", "--models", model, *common]) == 130
    strides = trained["usema"][0]["strides"]
    # nnU-Net's UNet takes no head_dim and no SEMA placement; usema-nosema keeps its zero SEMA blocks
    assert trained["nnunet"] == ({"strides": strides, "base_features": 8, "max_features": 16, "blocks_per_stage": 2}, 2)
    assert trained["usema-nosema"] == ({"strides": strides, **shared, "blocks_per_stage": 1}, 2)
    assert trained["usema"][0]["sema_per_stage"] == "deepest-2" and trained["usema"][0]["head_dim"] == 8
    windowed = [w is not None for w in trained["usema"][0]["stage_windows"]]
    assert windowed == [False] * (len(strides) - 2) + [True, True]


def test_steps_alone_end_a_run_and_a_run_stopped_short_gets_no_row(tmp_path, capsys, monkeypatch):
    import usema.training.run_training as run_training

    budgets = []

    def out_of_time_train(data, run_dir, **kwargs):
        budgets.append(Plans.load(run_dir).training.time_budget_minutes)
        return {"interrupted": False, "out_of_time": True, "last_epoch": 1, "epochs": 2}

    monkeypatch.setattr(run_training, "train", out_of_time_train)
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=5, shape=(24, 24), seed=1)
    runs = tmp_path / "runs"
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "--folds", "0", "--steps", "4",
            "--runs-dir", str(runs), "-o", str(tmp_path / "results"), "--device", "cpu", *TINY[:1],
            "iters_per_epoch=2"]
    assert main(args) == 2
    # a CPU plan's 30-minute default is no part of a study at equal steps
    assert budgets == [None] and Plans.load(runs / "phantoms").training.time_budget_minutes is None
    assert "run_fold_0/fold_0: a time budget stopped it after epoch 1 of 2; a run of the study trains all its " \
           "steps, so it gets no row" in capsys.readouterr().err
    assert not list(runs.rglob("bench_done.json")) and not (tmp_path / "results" / "accuracy_phantoms.csv").exists()

    # a study planned with a budget (by an earlier usema) is refused rather than continued
    plans_file = runs / "phantoms" / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["training"]["time_budget_minutes"] = 30.0
    plans_file.write_text(json.dumps(plans))
    assert main(args) == 2
    assert "this study's plan stops each run after 30 minutes, so its runs need not train their 4 steps" in \
        capsys.readouterr().err
    assert budgets == [None]


def test_network_settings_must_name_a_model_of_the_run_and_a_length_is_needed(tmp_path, capsys):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=4, shape=(24, 24), seed=1)
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "--runs-dir",
            str(tmp_path / "runs"), "-o", str(tmp_path / "results"), "--device", "cpu"]
    assert main([*args, "--steps", "2", "--network-settings", 'usema={"head_dim": 16}']) == 2
    assert "--network-settings names usema, which this run does not train" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--network-settings", "usema-nosema=[1, 2]"]) == 2
    assert "--network-settings usema-nosema: expected a JSON object" in capsys.readouterr().err
    assert main(args) == 2
    assert "give --steps N" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--folds", "5"]) == 2
    assert "folds are 0 to 4" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
