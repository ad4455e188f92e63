"""`usema bench efficiency` on tiny settings: well-formed CSV, report and plot; OOM and time-outs recorded."""

import pytest

from usema.bench.efficiency import efficiency_targets, read_efficiency_csv, run_efficiency_benchmark

pytest.importorskip("dynamic_network_architectures", reason="the nnU-Net baseline needs it")


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


def test_targets_from_rows():
    def row(model, d, size, status="ok", ms=None):
        return dict(model=model, dims=d, size=size, batch=1, precision="fp32", status=status, train_step_ms=ms)

    rows = [row("usema", 2, 512, ms=100.0), row("unetr", 2, 512, ms=350.0), row("swinunetr", 2, 512, ms=150.0),
            row("usema", 3, 96, ms=100.0), row("unetr", 3, 96, "oom"),
            row("usema", 2, 1024, ms=400.0), row("usema-full", 2, 512, ms=900.0),
            row("usema-full", 2, 1024, "timeout")]
    targets = {t["target"]: t for t in efficiency_targets(rows)}
    unetr_512 = targets["USEMA training step >= 2x faster than unetr at 512x512 (fp32, batch 1)"]
    assert unetr_512["value"] == pytest.approx(3.5) and unetr_512["met"] is True
    swin_512 = targets["USEMA training step >= 2x faster than swinunetr at 512x512 (fp32, batch 1)"]
    assert swin_512["value"] == pytest.approx(1.5) and swin_512["met"] is False
    assert targets["USEMA training step >= 2x faster than unetr at 96x96x96 (fp32, batch 1)"]["met"] is True
    assert targets["USEMA training step >= 2x faster than unetr at 1024x1024 (fp32, batch 1)"]["met"] is None
    full_2d = targets["usema-full runs out of memory or time where usema runs (2D, fp32, batch 1)"]
    assert full_2d["met"] is True and "1024x1024" in full_2d["detail"] and "512x512" not in full_2d["detail"]
    assert targets["usema-full runs out of memory or time where usema runs (3D, fp32, batch 1)"]["met"] is None


def test_refuses_unknown_settings_before_measuring(tmp_path):
    from usema.errors import UsemaError

    with pytest.raises(UsemaError, match="unknown models nope"):
        run_efficiency_benchmark(tmp_path / "x", models=["usema", "nope"])
    with pytest.raises(UsemaError, match="unknown precisions fp16"):
        run_efficiency_benchmark(tmp_path / "x", models=["usema"], precisions=["fp16"])
    assert not (tmp_path / "x").exists()
