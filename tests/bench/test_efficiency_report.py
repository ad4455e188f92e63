"""The efficiency benchmark's files: the CSV round trip, costs copied to failed rows, the targets, and the
network settings the report names."""

import pytest

from usema.bench.efficiency_report import (
    efficiency_csv,
    efficiency_markdown,
    efficiency_targets,
    fill_model_costs,
    read_efficiency_csv,
)


def test_rows_survive_the_csv_and_failed_rows_get_the_models_costs(tmp_path):
    rows = [dict(model="usema", dims=2, size=64, voxels=4096, batch=1, precision="fp32", status="ok",
                 params=1234, gflops=0.5, forward_ms=12.25, train_step_ms=40.0),
            dict(model="usema", dims=2, size=64, voxels=4096, batch=8, precision="fp32", status="oom")]
    fill_model_costs(rows)
    assert (rows[1]["params"], rows[1]["gflops"]) == (1234, 0.5)  # they depend on the model and size only
    (tmp_path / "efficiency.csv").write_text(efficiency_csv(rows))
    saved = read_efficiency_csv(tmp_path / "efficiency.csv")
    assert [(r["model"], r["size"], r["batch"], r["status"], r["params"]) for r in saved] == [
        ("usema", 64, 1, "ok", 1234), ("usema", 64, 8, "oom", 1234)]
    assert saved[0]["forward_ms"] == pytest.approx(12.25) and saved[1]["train_step_ms"] is None


def test_targets_from_rows():
    def row(model, d, size, status="ok", ms=None, batch=1):
        return dict(model=model, dims=d, size=size, batch=batch, precision="fp32", status=status, train_step_ms=ms)

    rows = [row("usema", 2, 512, ms=110.0), row("usema-nosema", 2, 512, ms=100.0), row("unetr", 2, 512, ms=350.0),
            row("swinunetr", 2, 512, ms=90.0), row("usema", 3, 96, ms=130.0), row("usema-nosema", 3, 96, ms=100.0),
            row("swinunetr", 3, 96, "oom"), row("usema", 2, 1024, ms=400.0)]
    targets = {t["target"]: t for t in efficiency_targets(rows)}
    control_2d = targets["usema training step <= 1.2x usema-nosema at 1 x 512x512 (fp32)"]
    assert control_2d["value"] == pytest.approx(1.1) and control_2d["met"] is True
    assert targets["usema training step <= 1.2x usema-nosema at 1 x 96x96x96 (fp32)"]["met"] is False
    unetr_512 = targets["USEMA training step faster than unetr at 512x512 (fp32, batch 1)"]
    assert unetr_512["value"] == pytest.approx(110 / 350) and unetr_512["met"] is True
    assert targets["USEMA training step faster than swinunetr at 512x512 (fp32, batch 1)"]["met"] is False
    swin_96 = targets["USEMA training step faster than swinunetr at 96x96x96 (fp32, batch 1)"]
    assert swin_96["met"] is True and "oom" in swin_96["detail"]  # running where the baseline cannot counts
    assert targets["USEMA training step faster than unetr at 1024x1024 (fp32, batch 1)"]["met"] is None

    compact = [row("usema@deepest-2", 3, "40x56x40", ms=1.1, batch=4), row("usema@all", 3, "40x56x40", ms=2.0, batch=4),
               row("usema-nosema", 3, "40x56x40", ms=1.0, batch=4)]
    compact_targets = {t["target"]: t for t in efficiency_targets(compact, compact=True)}
    assert compact_targets["usema@deepest-2 training step <= 1.15x usema-nosema at 4 x 40x56x40 (fp32)"]["met"] is True
    assert compact_targets["usema@all training step <= 1.15x usema-nosema at 4 x 40x56x40 (fp32)"]["value"] == 2.0


def test_the_report_names_the_network_settings_given_for_every_model_or_per_model():
    prov = {"command": "usema bench efficiency", "machine": {"description": "a test"}, "date": "today"}
    assert "USEMA." in efficiency_markdown([], prov, {"usema": {}, "nnunet": {}})
    every = efficiency_markdown([], prov, {"usema": {"head_dim": 16}, "nnunet": {"head_dim": 16}})
    assert "USEMA; with {'head_dim': 16} for every model." in every
    one = efficiency_markdown([], prov, {"usema": {"head_dim": 16}, "nnunet": {}})
    assert "USEMA; with {'head_dim': 16} for usema." in one
