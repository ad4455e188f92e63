"""`usema bench readme`: copy generated result files into the documentation between markers, so that no number
in the README or the result pages is typed by hand.

A block looks like::

    <!-- generated:../benchmarks/attention/attention.md -->
    ...replaced by the file's content...
    <!-- /generated -->

The path is relative to the file that holds the block. The result pages (docs/results/*.md) embed the
benchmark reports; the README embeds the summary page (docs/results/summary.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from usema.errors import UsemaError
from usema.utils.atomic import atomic_write_text

RESULT_PAGES = "docs/results"
_BLOCK = re.compile(r"(<!-- generated:(?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.DOTALL)
_MARKER = re.compile(r"^<!-- (generated:[^ ]+|/generated) -->\n", re.MULTILINE)
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _demote_headings(text: str) -> str:
    # The result files start at "#"; where they are embedded they sit under a "#" or "##" section.
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.MULTILINE)


def _relink(text: str, source_dir: str) -> str:
    # A result file links its plots and pages relative to itself; embedded, they must be relative to the file
    # that embeds it. Addresses, absolute paths and anchors are left alone.
    def relink(match: re.Match) -> str:
        target = match.group("target")
        if re.match(r"^[a-z]+:|^/|^#", target):
            return match.group(0)
        return f"{match.group('bang')}[{match.group('text')}]({source_dir}/{target})"

    return _LINK.sub(relink, text)


def update_generated_blocks(page: str | Path) -> list[str]:
    """Refresh every generated block of `page` from its file (paths relative to the page); returns the paths.
    An embedded file's own generated markers are dropped, so that blocks never nest."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    updated: list[str] = []

    def replace(match: re.Match) -> str:
        source = page.parent / match.group("path")
        if not source.is_file():
            raise UsemaError(f"{page}: generated block names {source}, which does not exist (run its benchmark)")
        updated.append(match.group("path"))
        body = _MARKER.sub("", source.read_text(encoding="utf-8"))
        body = _demote_headings(body).strip() + "\n"
        body = _relink(body, Path(match.group("path")).parent.as_posix())
        return match.group(1) + body + match.group(4)

    new_text = _BLOCK.sub(replace, text)
    if new_text != text:
        atomic_write_text(page, new_text)
    return updated


def update_readme(readme: str | Path = "README.md") -> list[tuple[Path, str]]:
    """Refresh the result pages (docs/results/*.md beside `readme`) from the benchmark reports, then `readme`
    from the summary page; returns (page, embedded path) for every block."""
    readme = Path(readme)
    pages = [*sorted((readme.parent / RESULT_PAGES).glob("*.md")), readme]
    return [(page, path) for page in pages for path in update_generated_blocks(page)]
