"""`usema bench attention` on tiny settings: well-formed CSV, plot and report; time-outs and OOM recorded."""

import pytest

from usema.bench.attention import attention_targets, read_attention_csv, run_attention_benchmark, window_sdpa
from usema.cli import main
from usema.nn.attention import sema_attention


@pytest.mark.slow
def test_tiny_run_writes_csv_plot_and_report(tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "attention", "-o", str(out), "--dims", "2", "3", "--sizes-2d", "14", "21",
                 "--sizes-3d", "10", "--modes", "sema", "full-materialized", "--repeats", "1",
                 "--time-limit", "120"])
    assert code == 0
    rows = read_attention_csv(out / "attention.csv")
    assert [(r["dims"], r["size"], r["mode"]) for r in rows] == [
        (2, 14, "sema"), (2, 21, "sema"), (2, 14, "full-materialized"), (2, 21, "full-materialized"),
        (3, 10, "sema"), (3, 10, "full-materialized")]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["tokens"] == row["size"] ** row["dims"]
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0
        assert row["peak_mb"] >= 0
        assert 0 < row["roofline_ms"] < row["forward_backward_ms"]  # nothing beats the matmul rate
    # full attention's products (checked below): QK^T and AV forward, four products back, 2 FLOPs a multiply-add
    # the n x n matrix of 21^2 tokens, kept for backward, is visible in the peak memory
    big = next(r for r in rows if r["mode"] == "full-materialized" and r["size"] == 21)
    assert big["peak_mb"] > 441**2 * 2 * 4 / 2**20
    assert big["gflop"] * 1e9 == pytest.approx(6 * 2 * 441**2 * 32 * 2, rel=0.01)
    assert (out / "attention.png").stat().st_size > 10_000
    report = (out / "attention.md").read_text()
    assert "Command: `usema bench attention" in report and "Machine:" in report and "| 3D | 10x10x10 |" in report


def test_timeouts_and_oom_are_recorded_not_raised(tmp_path):
    rows = run_attention_benchmark(tmp_path / "t", dims=[2], sizes_2d=[14, 28], modes=["sema"], repeats=1,
                                   time_limit_s=0.01)
    assert [r["status"] for r in rows] == ["timeout", "skipped"]
    rows = run_attention_benchmark(tmp_path / "m", dims=[2], sizes_2d=[14, 112], modes=["full-materialized"],
                                   repeats=1, memory_limit_gb=0.5)
    assert [r["status"] for r in rows] == ["ok", "oom"]


def test_naive_window_baseline_computes_the_same_attention():
    import torch

    q, k, v = (torch.randn(1, 2, 14 * 21, 8) for _ in range(3))
    torch.testing.assert_close(window_sdpa(q, k, v, (14, 21), 7), sema_attention(q, k, v, (14, 21), 7, "window"),
                               rtol=1e-4, atol=1e-5)


def test_targets_are_computed_from_rows():
    def row(mode, size, ms, mb, roofline=None):
        return dict(dims=2, mode=mode, size=size, status="ok", forward_backward_ms=ms, peak_mb=mb,
                    roofline_ms=roofline)

    rows = [row("sema", 224, 100.0, 50.0, roofline=40.0), row("sema", 448, 400.0, 200.0), row("window", 224, 90.0, 45.0),
            row("full", 224, 10_000.0, 60.0), row("window-sdpa", 224, 150.0, 40.0)]
    targets = {t["target"].split(" <=")[0].split(" >=")[0]: t for t in attention_targets(rows)}
    assert targets["SEMA time 448^2 / 224^2 (linear growth)"]["value"] == pytest.approx(4.0)
    assert targets["SEMA time 448^2 / 224^2 (linear growth)"]["met"] is True
    assert targets["full / SEMA time at 224^2"]["value"] == pytest.approx(100.0)
    assert targets["full / SEMA peak memory at 224^2"]["met"] is False
    assert targets["full-materialized / SEMA peak memory at 224^2"]["value"] is None
    assert targets["window-sdpa / SEMA time at 224^2"]["met"] is False
    roofline = targets["SEMA time / its matmul roofline at 224^2"]
    assert roofline["value"] == pytest.approx(2.5) and roofline["met"] is True


def test_memory_target_is_a_lower_bound_when_the_baseline_runs_out_of_memory():
    rows = [dict(dims=2, mode="sema", size=224, status="ok", forward_backward_ms=100.0, peak_mb=50.0),
            dict(dims=2, mode="full-materialized", size=224, status="oom", forward_backward_ms=None, peak_mb=None)]
    target = next(t for t in attention_targets(rows, memory_limit_mb=1000.0) if "materialized" in t["target"])
    assert target["value"] == pytest.approx(20.0) and target["met"] is True and target["lower_bound"] is True
    target = next(t for t in attention_targets(rows) if "materialized" in t["target"])
    assert target["value"] is None  # without the cap there is no bound to give
