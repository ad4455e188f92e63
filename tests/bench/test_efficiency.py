"""`usema bench efficiency` on tiny settings: well-formed CSV, report and plot; OOM and time-outs recorded."""

import pytest

from usema.bench.efficiency import run_efficiency_benchmark
from usema.bench.efficiency_report import read_efficiency_csv
from usema.planning.network import network_for_patch

pytest.importorskip("dynamic_network_architectures", reason="the nnU-Net baseline needs it")


@pytest.mark.slow
def test_tiny_run_writes_csv_report_and_plot(tmp_path):
    rows = run_efficiency_benchmark(tmp_path, models=["usema-nosema", "nnunet"], dims=[2], sizes_2d=[64],
                                    batch_sizes=[1], precisions=["fp32"], repeats=1, time_limit_s=300)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    saved = read_efficiency_csv(tmp_path / "efficiency.csv")
    assert [(r["model"], r["dims"], r["size"], r["voxels"], r["batch"], r["precision"]) for r in saved] == [
        ("usema-nosema", 2, 64, 4096, 1, "fp32"), ("nnunet", 2, 64, 4096, 1, "fp32")]
    for row in saved:
        assert row["params"] > 1_000_000 and row["gflops"] > 0.01
        assert row["forward_ms"] > 0 and row["train_step_ms"] > 0
        assert row["train_peak_mb"] > 0 and row["forward_peak_mb"] > 0
    # a 3x3 conv costs 2 * 9 * C_in * C_out FLOPs per output pixel; nnU-Net's first stage alone (1->32, 32->32
    # at 64x64) is a lower bound
    assert saved[1]["gflops"] * 1e9 > 2 * 9 * (1 * 32 + 32 * 32) * 64 * 64
    report = (tmp_path / "efficiency.md").read_text()
    assert "Command: `" in report and "Machine:" in report and "## Targets" in report
    assert "| nnunet | 2D | 64x64 | 1 | fp32 | ok |" in report
    assert (tmp_path / "efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "efficiency.png").stat().st_size > 10_000


def test_oom_and_timeouts_are_recorded_and_larger_inputs_skipped(tmp_path):
    rows = run_efficiency_benchmark(tmp_path / "m", models=["nnunet"], dims=[2], sizes_2d=[64, 128],
                                    batch_sizes=[1, 2], precisions=["fp32"], repeats=1, memory_limit_gb=0.02)
    assert [(r["batch"], r["size"], r["status"]) for r in rows] == [
        (1, 64, "oom"), (1, 128, "skipped"), (2, 64, "skipped"), (2, 128, "skipped")]
    rows = run_efficiency_benchmark(tmp_path / "t", models=["nnunet"], dims=[3], sizes_3d=[16, 32],
                                    batch_sizes=[1], precisions=["bf16"], time_limit_s=0.01)
    assert [r["status"] for r in rows] == ["timeout", "skipped"]
    assert read_efficiency_csv(tmp_path / "t" / "efficiency.csv")[0]["status"] == "timeout"


def test_networks_are_built_as_plans_build_them():
    every_stage = network_for_patch("usema", (40, 56, 40), 1, 3, {"base_features": 16, "sema_per_stage": "all"})
    settings = every_stage.network_settings
    assert settings["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert settings["stage_windows"] == [[5, 4, 5], [5, 4, 5], [5, 7, 5], [5, 7, 5]]
    assert settings["base_features"] == 16
    planned = network_for_patch("usema", (40, 56, 40), 1, 3, {"base_features": 16}).network_settings
    assert planned["sema_per_stage"] == "deepest-2"  # the plans' default placement
    assert planned["stage_windows"] == [None, None, [5, 7, 5], [5, 7, 5]]
    assert "stage_windows" not in network_for_patch("usema-nosema", (40, 56, 40), 1, 3).network_settings
    from usema.bench.variants import expand_placements

    assert expand_placements(["usema", "usema-nosema", "nnunet"], ["all", "deepest-2"]) == [
        ("usema@all", "usema", {"sema_per_stage": "all"}), ("usema@deepest-2", "usema", {"sema_per_stage": "deepest-2"}),
        ("usema-nosema", "usema-nosema", {}), ("nnunet", "nnunet", {})]
    assert network_for_patch("unetr", (64, 64), 1, 3).network_settings["patch_size"] == [64, 64]


def test_refuses_unknown_settings_before_measuring(tmp_path):
    from usema.errors import UsemaError

    with pytest.raises(UsemaError, match="unknown models nope"):
        run_efficiency_benchmark(tmp_path / "x", models=["usema", "nope"])
    with pytest.raises(UsemaError, match="unknown precisions fp16"):
        run_efficiency_benchmark(tmp_path / "x", models=["usema"], precisions=["fp16"])
    with pytest.raises(UsemaError, match="--network-settings names nnunet, which this run does not measure"):
        run_efficiency_benchmark(tmp_path / "x", models=["usema"], network_settings={"nnunet": {}})
    # `network`, the old keyword: the same settings for every model, for one release more
    with (pytest.warns(FutureWarning, match=r"network=\.\.\.\) is deprecated: use network_settings"),
          pytest.raises(UsemaError, match="unknown precisions fp16")):
        run_efficiency_benchmark(tmp_path / "x", models=["usema"], precisions=["fp16"], network={})
    assert not (tmp_path / "x").exists()
