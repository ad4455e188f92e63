"""`usema bench readme` copies result files into the README's generated blocks."""

import pytest

from usema.bench.readme import update_readme
from usema.errors import UsemaError


def test_generated_blocks_are_replaced_and_headings_demoted(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.md").write_text(
        "# Result A\n\n| x |\n|---|\n| 1.5 |\n\n![plot](a.png) ![web](https://example.org/b.png)\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n<!-- generated:results/a.md -->\nold text\n<!-- /generated -->\nafter\n")
    assert update_readme(readme) == ["results/a.md"]
    text = readme.read_text()
    assert "old text" not in text and "### Result A" in text and "| 1.5 |" in text
    # the plot is linked relative to the README, an absolute address is left alone
    assert "![plot](results/a.png)" in text and "![web](https://example.org/b.png)" in text
    assert text.startswith("# Title\n\nintro\n") and text.endswith("<!-- /generated -->\nafter\n")
    assert update_readme(readme) == ["results/a.md"] and readme.read_text() == text  # idempotent


def test_missing_result_file_is_an_error_naming_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:nope.md -->\n<!-- /generated -->\n")
    with pytest.raises(UsemaError, match="nope.md"):
        update_readme(readme)
