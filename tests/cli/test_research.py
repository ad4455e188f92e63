"""The research commands' own wiring: `usema models` and `usema bench readme` (the benchmarks, `analyze` and
`nnunet-plans` are tested with their modules)."""

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
