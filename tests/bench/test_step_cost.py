"""Every model's step cost, measured interleaved; controls that are cheaper per step get equal compute."""

import json

import pytest
import torch

from usema.bench.accuracy import _variants_with_compute
from usema.bench.accuracy_report import ReportFiles
from usema.bench.step_cost import cost_ratios, equal_compute_steps, measure_step_costs, median_interval
from usema.bench.variants import Variant
from usema.data.phantoms import make_phantom_dataset
from usema.planning.planner import plan_dataset


def test_step_costs_are_measured_per_model_and_cheaper_controls_get_equal_compute(tmp_path):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=4, shape=(24, 24), seed=1)
    base = tmp_path / "run"
    plans = plan_dataset(data, base, device="cpu", patch_size=[16, 16], batch_size=2,
                         network_settings={"base_features": 8, "max_features": 16, "head_dim": 8})
    measured = measure_step_costs({"usema": plans, "usema-nosema": plans.with_model("usema-nosema")},
                                  torch.device("cpu"), rounds=2)
    assert set(measured["seconds_per_step"]) == {"usema", "usema-nosema"}
    assert all(len(v) == 2 and min(v) > 0 for v in measured["samples"].values())

    assert equal_compute_steps(600, 1.3, 100) == 800  # 780 rounded to whole epochs
    files = ReportFiles(tmp_path / "results", "phantoms")
    files.output.mkdir()
    # the host slows to half speed in round 2, after usema's step: the medians' ratio (1.3 / 2.0) says nnunet's
    # step costs more than usema's; within each round but that one usema's step costs 1.3 times nnunet's
    samples = {"usema": [1.3, 1.3, 2.6], "usema-nosema": [1.25, 2.5, 2.5], "nnunet": [1.0, 2.0, 2.0]}
    files.step_cost.write_text(json.dumps({"seconds_per_step": {"usema": 1.3, "usema-nosema": 2.5, "nnunet": 2.0},
                                           "samples": samples, "rounds": 3, "load_average_before": 0.5,
                                           "load_average_after": 0.5}))
    assert cost_ratios({"samples": samples}) == pytest.approx({"usema-nosema": 1.04, "nnunet": 1.3})
    assert "| nnunet | 2.000 | 1.300 |  |" in write_report_lines(files)  # 3 rounds: too few for an interval
    variants = [Variant(m, m, {}) for m in ("usema", "usema-nosema", "nnunet")]
    extended, steps_of = _variants_with_compute(variants, 600, files, 100)
    assert [v.label for v in extended] == ["usema", "usema-nosema", "nnunet", "nnunet@compute"]
    assert steps_of == {"usema": 600, "usema-nosema": 600, "nnunet": 600, "nnunet@compute": 800}


def write_report_lines(files):
    from usema.bench.accuracy_report import _step_cost_lines

    return _step_cost_lines(files)


def test_the_ratio_that_decides_equal_compute_shows_its_interval():
    # 21 rounds: the sign test's 95% interval of the median is [6th, 16th] of the sorted values
    values = [1.0 + i / 100 for i in range(21)]
    assert median_interval(values) == (1.05, 1.15)
    assert median_interval(values[::-1]) == (1.05, 1.15)  # order does not matter
    assert median_interval([1.0] * 5) is None  # 5 values cannot give 95%
    low, high = median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # the smallest count that can: the extremes
    assert (low, high) == (1.0, 6.0)


def test_the_command_measures_without_preprocessing_or_fixing_the_steps(tmp_path):
    from usema.cli import main

    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=4, shape=(24, 24), seed=1)
    assert main(["bench", "accuracy", "--dataset", str(data), "--models", "usema", "usema-nosema", "--steps", "4",
                 "--measure-step-cost", "--runs-dir", str(tmp_path / "runs"), "-o", str(tmp_path / "results"),
                 "--device", "cpu", "--threads", "1", "--plan", "patch_size=[16,16]", "batch_size=2",
                 'network_settings={"base_features": 8, "max_features": 16, "head_dim": 8}']) == 0
    measured = json.loads((tmp_path / "results" / "step_cost_phantoms.json").read_text())
    assert set(measured["seconds_per_step"]) == {"usema", "usema-nosema"} and measured["commit"]
    study = tmp_path / "runs" / "phantoms"
    assert (study / "plans.json").is_file()
    assert not (study / "preprocessed").exists() and not (study / "bench_study.json").exists()
