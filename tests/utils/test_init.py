"""usema.utils serves every stage and imports none of them."""

import ast
from pathlib import Path

import usema.utils

STAGES = ("data", "planning", "preprocessing", "training", "inference", "evaluation", "bench", "analysis", "cli")


def test_utils_imports_no_stage():
    climbs = []
    for module in sorted(Path(usema.utils.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            climbs += [f"{module.name}: {name}" for name in names
                       if any(name == f"usema.{s}" or name.startswith(f"usema.{s}.") for s in STAGES)]
    assert climbs == []
