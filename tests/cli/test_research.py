"""The research commands' own wiring: `usema models`, `usema bench readme` and the network settings the bench
commands pass (the benchmarks, `analyze` and `nnunet-plans` are tested with their modules)."""

from usema.cli import main
from usema.models import summary


def test_models_prints_the_table(monkeypatch, capsys):
    monkeypatch.setattr(summary, "list_models", lambda: ["usema-nosema"])
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("usema-nosema")


def test_bench_readme_refreshes_the_result_pages_then_the_readme(tmp_path, capsys):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "summary.md").write_text("# Summary\n\nUSEMA ahead.\n")
    readme = tmp_path / "README.md"
    readme.write_text("## Results\n\n<!-- generated:docs/results/summary.md -->\n<!-- /generated -->\n")
    assert main(["bench", "readme", str(readme)]) == 0
    assert capsys.readouterr().out == f"updated {readme} from docs/results/summary.md\n"
    assert "USEMA ahead." in readme.read_text()


def _captured(monkeypatch, module, name):
    """Replace `module.name` with a recorder of its keyword arguments."""
    calls = []
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(kwargs) or [])
    return calls


def test_bench_efficiency_takes_network_settings_per_model(monkeypatch, tmp_path, capsys):
    from usema.bench import efficiency

    calls = _captured(monkeypatch, efficiency, "run_efficiency_benchmark")
    assert main(["bench", "efficiency", "-o", str(tmp_path), "--models", "usema", "nnunet",
                 "--network-settings", 'usema={"head_dim": 16}', 'nnunet={"blocks_per_stage": 1}']) == 0
    assert calls[0]["network_settings"] == {"usema": {"head_dim": 16}, "nnunet": {"blocks_per_stage": 1}}
    assert "warning" not in capsys.readouterr().err


def test_bench_efficiency_network_is_the_old_spelling_for_every_model(monkeypatch, tmp_path, capsys):
    from usema.bench import efficiency

    calls = _captured(monkeypatch, efficiency, "run_efficiency_benchmark")
    assert main(["bench", "efficiency", "-o", str(tmp_path), "--models", "usema", "nnunet",
                 "--network", '{"base_features": 16}', "--network-settings", 'nnunet={"blocks_per_stage": 1}']) == 0
    assert "usema: warning: --network JSON is deprecated: use --network-settings MODEL=JSON" in capsys.readouterr().err
    assert calls[0]["network_settings"] == {"usema": {"base_features": 16},
                                            "nnunet": {"base_features": 16, "blocks_per_stage": 1}}


def test_bench_accuracy_model_overrides_is_the_old_spelling_of_network_settings(monkeypatch, tmp_path, capsys):
    from usema.bench import accuracy

    calls = _captured(monkeypatch, accuracy, "run_accuracy_benchmark")
    assert main(["bench", "accuracy", "--dataset", str(tmp_path), "--steps", "2", "--models", "usema", "nnunet",
                 "--model-overrides", 'nnunet={"blocks_per_stage": 2}', "--network-settings", 'usema={"head_dim": 16}']) == 0
    assert "usema: warning: --model-overrides is deprecated: use --network-settings" in capsys.readouterr().err
    assert calls[0]["network_settings"] == {"nnunet": {"blocks_per_stage": 2}, "usema": {"head_dim": 16}}
