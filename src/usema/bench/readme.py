"""`usema bench readme`: copy generated result files into the README between markers, so that no number in
the README is typed by hand.

A block looks like::

    <!-- generated:benchmarks/attention/attention.md -->
    ...replaced by the file's content...
    <!-- /generated -->
"""

from __future__ import annotations

import re
from pathlib import Path

from usema.errors import UsemaError
from usema.utils.atomic import atomic_write_text

_BLOCK = re.compile(r"(<!-- generated:(?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.DOTALL)


def _demote_headings(text: str) -> str:
    # The result files start at "#"; inside the README they sit under a "##" section.
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.MULTILINE)


def _relink_images(text: str, source_dir: str) -> str:
    # A result file links its plots relative to itself; inside the README they must be relative to the README.
    def relink(match: re.Match) -> str:
        target = match.group("target")
        if re.match(r"^[a-z]+:|^/", target):
            return match.group(0)
        return f"![{match.group('alt')}]({source_dir}/{target})"

    return re.sub(r"!\[(?P<alt>[^\]]*)\]\((?P<target>[^)\s]+)\)", relink, text)


def update_readme(readme: str | Path = "README.md") -> list[str]:
    """Refresh every generated block of `readme` from its file (paths relative to the README); returns them."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    updated: list[str] = []

    def replace(match: re.Match) -> str:
        source = readme.parent / match.group("path")
        if not source.is_file():
            raise UsemaError(f"{readme}: generated block names {source}, which does not exist (run its benchmark)")
        updated.append(match.group("path"))
        body = _demote_headings(source.read_text(encoding="utf-8")).strip() + "\n"
        body = _relink_images(body, Path(match.group("path")).parent.as_posix())
        return match.group(1) + body + match.group(4)

    new_text = _BLOCK.sub(replace, text)
    if new_text != text:
        atomic_write_text(readme, new_text)
    return updated
