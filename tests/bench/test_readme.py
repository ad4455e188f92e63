"""`usema bench readme` copies result files into the result pages' generated blocks, and the summary into the
README."""

import pytest

from usema.bench.readme import update_generated_blocks, update_readme
from usema.errors import UsemaError


def test_generated_blocks_are_replaced_and_headings_demoted(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.md").write_text(
        "# Result A\n\n| x |\n|---|\n| 1.5 |\n\n![plot](a.png) ![web](https://example.org/b.png) [top](#x)\n"
    )
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nintro\n<!-- generated:results/a.md -->\nold text\n<!-- /generated -->\nafter\n")
    assert update_generated_blocks(page) == ["results/a.md"]
    text = page.read_text()
    assert "old text" not in text and "### Result A" in text and "| 1.5 |" in text
    # the plot is linked relative to the page, an address and an anchor are left alone
    assert "![plot](results/a.png)" in text and "![web](https://example.org/b.png)" in text and "[top](#x)" in text
    assert text.startswith("# Title\n\nintro\n") and text.endswith("<!-- /generated -->\nafter\n")
    assert update_generated_blocks(page) == ["results/a.md"] and page.read_text() == text  # idempotent


def test_the_result_pages_embed_the_reports_and_the_readme_embeds_the_summary(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench.md").write_text("# Bench\n\n| ms | 12.5 |\n\n![curve](bench.png)\n")
    pages = tmp_path / "docs" / "results"
    pages.mkdir(parents=True)
    (pages / "bench.md").write_text("# Bench page\n\n<!-- generated:../../benchmarks/bench.md -->\n<!-- /generated -->\n")
    (pages / "summary.md").write_text("# Summary\n\nSee [the bench](bench.md).\n")
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n## Results\n\n<!-- generated:docs/results/summary.md -->\n<!-- /generated -->\n")

    assert update_readme(readme) == [(pages / "bench.md", "../../benchmarks/bench.md"),
                                     (readme, "docs/results/summary.md")]
    assert "| ms | 12.5 |" in (pages / "bench.md").read_text()
    assert "![curve](../../benchmarks/bench.png)" in (pages / "bench.md").read_text()
    readme_text = readme.read_text()
    # the summary's link to a page beside it now leads there from the README
    assert "### Summary" in readme_text and "[the bench](docs/results/bench.md)" in readme_text


def test_an_embedded_files_own_blocks_do_not_nest(tmp_path):
    (tmp_path / "inner.md").write_text("x\n")
    (tmp_path / "summary.md").write_text("<!-- generated:inner.md -->\nx\n<!-- /generated -->\nverdict\n")
    page = tmp_path / "README.md"
    page.write_text("<!-- generated:summary.md -->\n<!-- /generated -->\n")
    update_generated_blocks(page)
    assert page.read_text() == "<!-- generated:summary.md -->\nx\nverdict\n<!-- /generated -->\n"


def test_missing_result_file_is_an_error_naming_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:nope.md -->\n<!-- /generated -->\n")
    with pytest.raises(UsemaError, match="nope.md"):
        update_readme(readme)
