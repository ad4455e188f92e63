"""`usema models`: every preset with the parameter count of the network it builds."""

from torch import nn

from usema.models import build_model, summary


def test_only_trainable_parameters_count():
    layer = nn.Linear(3, 2)
    assert summary.count_parameters(layer) == 8
    layer.bias.requires_grad_(False)
    assert summary.count_parameters(layer) == 6


def test_the_table_counts_each_presets_own_network(monkeypatch, capsys):
    monkeypatch.setattr(summary, "list_models", lambda: ["usema-nosema"])
    [row] = summary.model_table(in_channels=1, num_classes=3)
    assert row["model"] == "usema-nosema" and "control" in row["description"]
    for dims in (2, 3):
        assert row[f"params_{dims}d"] == summary.count_parameters(build_model("usema-nosema", dims, 1, 3))
    summary.print_model_table()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "params", "2D"]
    assert lines[1].startswith("usema-nosema") and f"{row['params_2d'] / 1e6:.2f}M" in lines[1]
