"""`usema bench accuracy` on tiny settings: one row per model and seed, resumable model by model."""

import csv
import json
import statistics

import pytest

from usema.cli import main
from usema.data.phantoms import make_phantom_dataset


@pytest.mark.slow
def test_two_models_train_score_and_resume(tmp_path):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=3, num_cases=10, shape=(20, 24, 20), seed=3)
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "usema", "--budget", "0.05",
            "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"), "--device", "cpu",
            "--plan", "patch_size=[16,16,16]", "batch_size=2", "iters_per_epoch=2", "val_max_cases=1",
            'network_settings={"base_features": 8, "max_features": 16, "blocks_per_stage": 1, "head_dim": 8}',
            "--model-overrides", 'usema={"head_dim": 16}', "--also-infer", "bf16",
            "--threads", "1"]
    assert main(args) == 0
    csv_path = tmp_path / "results" / "accuracy_phantoms.csv"
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["usema-nosema", "usema"]
    for row in rows:
        assert row["seed"] == "0" and int(row["val_cases"]) == 2 and int(row["epochs"]) >= 1
        assert 0.0 <= float(row["mean_dice"]) <= 1.0 and float(row["mean_hd95"]) >= 0.0
        # the same checkpoint scored again under bf16 autocast: its own predictions, close to the fp32 ones
        assert 0.0 <= float(row["bf16_mean_dice"]) <= 1.0 and float(row["bf16_predict_seconds"]) > 0
        assert abs(float(row["bf16_mean_dice"]) - float(row["mean_dice"])) < 0.2
    assert (tmp_path / "runs" / "phantoms" / "usema" / "seed_0" / "evaluation_bf16" / "summary.json").is_file()
    assert float(rows[1]["params_m"]) > float(rows[0]["params_m"])  # the SEMA blocks add parameters
    report = (tmp_path / "results" / "accuracy_phantoms.md").read_text()
    assert "Command: `usema bench accuracy" in report and "| usema-nosema |" in report
    assert "cores (1 used by torch)" in report
    # the per-model setting reached usema's run only, and the report lists every model's network settings
    usema_plans = json.loads((tmp_path / "runs" / "phantoms" / "usema" / "seed_0" / "plans.json").read_text())
    nosema_plans = json.loads((tmp_path / "runs" / "phantoms" / "usema-nosema" / "seed_0" / "plans.json").read_text())
    usema_settings = usema_plans["model"]["network_settings"]
    nosema_settings = nosema_plans["model"]["network_settings"]
    assert usema_settings["head_dim"] == 16 and nosema_settings["head_dim"] == 8
    assert ('- `usema`: {"base_features": 8, "max_features": 16, "blocks_per_stage": 1, "head_dim": 16, '
            '"sema_per_stage": "deepest-2", "stage_windows"') in report
    assert "stage_windows" in usema_settings  # the planner's windows, for usema only
    assert "stage_windows" not in nosema_settings

    # a second call finds both rows done and trains nothing again
    before = csv_path.read_text()
    assert main(args) == 0
    assert csv_path.read_text() == before


def test_model_overrides_must_name_a_model_of_the_run(tmp_path, capsys):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=4, shape=(24, 24), seed=1)
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "--runs-dir",
            str(tmp_path / "runs"), "-o", str(tmp_path / "results"), "--device", "cpu"]
    assert main([*args, "--model-overrides", 'usema={"head_dim": 16}']) == 2
    assert "--model-overrides names usema, which this run does not train" in capsys.readouterr().err
    assert main([*args, "--model-overrides", "usema-nosema=[1, 2]"]) == 2
    assert "--model-overrides usema-nosema: expected a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_more_seeds_in_a_later_invocation_keep_the_split_and_every_rows_command(tmp_path):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=10, shape=(24, 24), seed=1)
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "--budget", "0.02",
            "--runs-dir", str(runs), "-o", str(results), "--device", "cpu", "--threads", "1",
            "--plan", "patch_size=[16,16]", "batch_size=2", "iters_per_epoch=2", "val_max_cases=1",
            'model_overrides={"base_features": 8, "max_features": 16, "blocks_per_stage": 1}']
    assert main(args) == 0
    report = (results / "accuracy_phantoms.md").read_text()
    assert report.count("Command: `usema bench accuracy") == 1 and "Mean over seeds" not in report
    # results from before the history file existed: the report's one command is credited with every row
    (results / "accuracy_phantoms.json").unlink()
    assert main([*args, "--seeds", "1", "2"]) == 0
    history = json.loads((results / "accuracy_phantoms.json").read_text())["invocations"]
    assert [inv["rows"] for inv in history] == [[["usema-nosema", 0]], [["usema-nosema", 1], ["usema-nosema", 2]]]
    assert "--seeds 1 2" in history[1]["command"] and "--seeds" not in history[0]["command"]
    report = (results / "accuracy_phantoms.md").read_text()
    assert "Made by 2 invocations" in report and "Rows usema-nosema seed 1, usema-nosema seed 2:" in report
    assert report.count("Command: `usema bench accuracy") == 2
    # the training seed changes the initialisation, never the held-out cases
    splits = [json.loads((runs / "phantoms" / "usema-nosema" / f"seed_{s}" / "splits.json").read_text())
              for s in (0, 1, 2)]
    assert splits[0]["splits"] == splits[1]["splits"] == splits[2]["splits"]
    with (results / "accuracy_phantoms.csv").open() as handle:
        dice = [float(r["mean_dice"]) for r in csv.DictReader(handle)]
    assert len(dice) == 3
    mean, sd = statistics.mean(dice), statistics.stdev(dice)
    assert "| usema-nosema | 0 1 2 |" in report and f"{mean:.3f} ± {sd:.3f}" in report


def test_a_training_stopped_by_a_signal_ends_the_benchmark_with_its_code_and_no_row(tmp_path, monkeypatch):
    import usema.training.api as training_api

    def stopped_train(data, run_dir, **kwargs):
        return {"interrupted": True, "stop_signal": 2, "checkpoint_latest": run_dir / "fold_0" / "x.pt"}

    monkeypatch.setattr(training_api, "train", stopped_train)
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=5, shape=(24, 24), seed=1)
    args = ["bench", "accuracy", "--dataset", str(data), "--models", "usema-nosema", "--runs-dir",
            str(tmp_path / "runs"), "-o", str(tmp_path / "results"), "--device", "cpu"]
    assert main(args) == 130
    assert not (tmp_path / "results" / "accuracy_phantoms.csv").exists()
    assert not list((tmp_path / "runs").rglob("bench_done.json"))


def test_each_model_keeps_the_shared_plans_settings_it_takes(tmp_path, monkeypatch):
    import usema.training.api as training_api
    from usema.planning import Plans

    trained = {}

    def stopped_train(data, run_dir, **kwargs):
        plans = Plans.load(run_dir)
        plans.build_network()  # the model takes every setting its run's plan names
        trained[plans.model_name] = plans.network_settings
        return {"interrupted": True, "stop_signal": 2, "checkpoint_latest": run_dir / "fold_0" / "x.pt"}

    monkeypatch.setattr(training_api, "train", stopped_train)
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=3, num_cases=5, shape=(20, 24, 20),
                                seed=1)
    shared = {"base_features": 8, "max_features": 16, "head_dim": 8}
    common = ["--dataset", str(data), "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"),
              "--device", "cpu", "--plan", "batch_size=2",
              f"model_overrides={json.dumps({**shared, 'blocks_per_stage': 1})}"]
    # a stopped training ends the invocation: one per model, the first one plans
    assert main(["bench", "accuracy", "--models", "nnunet", *common,
                 "--model-overrides", 'nnunet={"blocks_per_stage": 2}']) == 130
    for model in ("usema-nosema", "usema"):
        assert main(["bench", "accuracy", "--models", model, *common]) == 130
    strides = trained["usema"]["strides"]
    # nnU-Net's UNet takes no head_dim and no SEMA placement; usema-nosema keeps its zero SEMA blocks
    assert trained["nnunet"] == {
        "strides": strides, "base_features": 8, "max_features": 16, "blocks_per_stage": 2
    }
    assert trained["usema-nosema"] == {"strides": strides, **shared, "blocks_per_stage": 1}
    assert trained["usema"]["sema_per_stage"] == "deepest-2" and trained["usema"]["head_dim"] == 8
    windowed = [w is not None for w in trained["usema"]["stage_windows"]]
    assert windowed == [False] * (len(strides) - 2) + [True, True]


@pytest.mark.slow
def test_equal_steps_and_one_row_per_placement(tmp_path):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=3, num_cases=10, shape=(20, 24, 20), seed=4)
    common = ["--dataset", str(data), "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"),
              "--device", "cpu", "--threads", "1", "--plan", "patch_size=[16,16,16]", "batch_size=2",
              "iters_per_epoch=2", "val_max_cases=1",
              'model_overrides={"base_features": 8, "max_features": 16, "blocks_per_stage": 1, "head_dim": 8}']
    args = ["bench", "accuracy", "--models", "usema", "usema-nosema", "--steps", "4",
            "--placements", "all", "bottleneck", *common]
    assert main(args) == 0
    with (tmp_path / "results" / "accuracy_phantoms.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["usema@all", "usema@bottleneck", "usema-nosema"]
    assert all(int(r["iterations"]) == 4 for r in rows)  # the same number of steps, whatever the time
    runs = tmp_path / "runs" / "phantoms"
    placed = json.loads((runs / "usema@bottleneck" / "seed_0" / "plans.json").read_text())
    assert placed["model"]["name"] == "usema"
    assert placed["model"]["network_settings"]["sema_per_stage"] == "bottleneck"
    report = (tmp_path / "results" / "accuracy_phantoms.md").read_text()
    assert "4 optimizer steps per model" in report and "| usema@bottleneck | 0 |" in report
    # a later invocation with another step count would mix protocols: refused
    assert main(["bench", "accuracy", "--models", "usema", "--steps", "6", *common]) == 2
