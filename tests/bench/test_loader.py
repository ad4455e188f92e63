"""`usema bench loader` on tiny settings: samples per second per worker count, training memory per dataset
size, and the report with its command and machine."""

import csv

import pytest

from usema.bench.loader import loader_markdown, memory_growth
from usema.cli import main


@pytest.mark.slow
def test_loader_benchmark_on_tiny_phantoms(tmp_path):
    out, work = tmp_path / "loader", tmp_path / "work"
    common = [
        "bench",
        "loader",
        "-o",
        str(out),
        "--work-dir",
        str(work),
        "--shape",
        "24x20x16",
        "--cases",
        "4",
        "6",
        "--patch-size",
        "16x16x16",
    ]
    assert main([*common, "--workers", "0", "1", "--batches", "2", "--iterations", "2"]) == 0
    with (out / "loader.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    throughput = [r for r in rows if r["measurement"] == "throughput"]
    assert [(r["workers"], r["cases"], r["patch_size"]) for r in throughput] == [
        ("0", "6", "16x16x16"),
        ("1", "6", "16x16x16"),
    ]
    assert all(float(r["samples_per_second"]) > 0 for r in throughput)
    memory = [r for r in rows if r["measurement"] == "training_memory"]
    assert [(r["cases"], r["status"]) for r in memory] == [("4", "ok"), ("6", "ok")]
    assert all(float(r["peak_rss_mb"]) > 100 for r in memory)  # torch alone takes more
    report = (out / "loader.md").read_text()
    assert "Command: `usema bench loader" in report and "From 4 to 6 cases the peak grows by" in report
    assert sorted(p.name for p in work.iterdir()) == ["phantoms_24x20x16_6", "run_4", "run_6"]
    # a second call reuses the data and the runs it made
    stamp = (work / "run_6" / "plans.json").stat().st_mtime_ns
    assert main([*common, "--workers", "0", "--batches", "1", "--iterations", "1"]) == 0
    assert (work / "run_6" / "plans.json").stat().st_mtime_ns == stamp


def test_the_report_states_the_growth_against_the_target():
    rows = [
        {
            "measurement": "training_memory",
            "cases": 24,
            "batches": 2,
            "patch_size": "8x8x8",
            "status": "ok",
            "peak_rss_mb": 1160.0,
        },
        {
            "measurement": "training_memory",
            "cases": 4,
            "batches": 2,
            "patch_size": "8x8x8",
            "status": "ok",
            "peak_rss_mb": 1100.0,
        },
    ]
    assert memory_growth(rows) == (4, 24, 60.0)
    prov = {"command": "usema bench loader", "date": "today", "machine": {"description": "a machine"}}
    report = loader_markdown(rows, prov, (192, 192, 160))
    assert "From 4 to 24 cases the peak grows by 60 MB (target: under 150 MB" in report and ": met)" in report
    assert memory_growth(rows[:1]) is None
