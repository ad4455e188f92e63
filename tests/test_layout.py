"""Tests mirror the tree: every module src/usema/<path>/<module>.py has tests/<path>/test_<module>.py, and every
test file is named after a module beside which it sits (test_<module>.py or test_<module>_<subject>.py); and
bench/ and analysis/ import the public API, not the stages' private modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, TESTS = ROOT / "src" / "usema", ROOT / "tests"

# Modules with nothing of their own to test: package docstrings and re-exports, and `python -m` entry points.
# A package __init__ that defines something (usema, usema.cli, usema.training, usema.integrations.nnunet) is
# tested in test_init.py.
NOTHING_TO_TEST = {
    "cli/__main__.py",
    "analysis/__init__.py",
    "bench/__init__.py",
    "data/__init__.py",
    "evaluation/__init__.py",
    "inference/__init__.py",
    "integrations/__init__.py",
    "integrations/nnunet/ext_trainer/__init__.py",
    "integrations/nnunet/ext_trainer/nnUNetTrainerUSEMA.py",
    "models/__init__.py",
    "nn/__init__.py",
    "planning/__init__.py",
    "preprocessing/__init__.py",
    "utils/__init__.py",
}
# Test files about the repository rather than one module.
NOT_A_MODULE = {"test_layout.py"}


def _test_name(module: Path) -> str:
    return "test_init" if module.name == "__init__.py" else f"test_{module.stem}"


def test_every_module_has_its_test_file():
    modules = sorted(p.relative_to(SRC) for p in SRC.rglob("*.py"))
    assert len(modules) > 80  # the walk found the package
    missing = [
        f"{module} -> tests/{module.parent / _test_name(module)}.py"
        for module in modules
        if module.as_posix() not in NOTHING_TO_TEST and not (TESTS / module.parent / f"{_test_name(module)}.py").is_file()
    ]
    assert missing == []
    assert all((SRC / name).is_file() for name in NOTHING_TO_TEST)  # the exceptions name modules that exist


def test_every_test_file_is_named_after_a_module_beside_it():
    strays = []
    for test in sorted(TESTS.rglob("test_*.py")):
        relative = test.relative_to(TESTS)
        if relative.as_posix() in NOT_A_MODULE:
            continue
        package = SRC / relative.parent
        names = {_test_name(m) for m in package.glob("*.py")} if package.is_dir() else set()
        if not any(relative.stem == name or relative.stem.startswith(f"{name}_") for name in names):
            strays.append(relative.as_posix())
    assert strays == []


# The stage packages: outside them, their modules are private; a package-level name (usema.planning.Plans) is
# their public face. usema itself, usema.models, usema.nn, usema.checkpoint, usema.errors and usema.utils are
# public as a whole.
STAGES = ("data", "planning", "preprocessing", "training", "inference", "evaluation", "integrations", "cli")
# The private stage modules bench/ and analysis/ import, and why: each measures that component by nature.
ALLOWED_PRIVATE_IMPORTS = {
    # `usema bench loader` measures the training loader itself: its batches and patch sampler
    ("bench/loader.py", "usema.training.batches"),
    ("bench/loader.py", "usema.training.patches"),
    # ... with the loader worker count a plan trains with
    ("bench/loader.py", "usema.planning.settings"),
    # ... on runs planned by the planner itself, each choice fixed by the benchmark (no device profile)
    ("bench/loader.py", "usema.planning.planner"),
    # the step-cost measurement of `usema bench accuracy` times the trainer's own training step
    ("bench/step_cost.py", "usema.training.timing"),
}


def _imported_modules(path: Path) -> set[str]:
    """The modules a file imports, anywhere in it: `from usema.x import y` names usema.x.y when y is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            package = node.module or ""
            if node.level:  # relative: from the file's own package
                parts = ["usema", *path.relative_to(SRC).parent.parts]
                package = ".".join(parts[: len(parts) - node.level + 1] + ([package] if package else []))
            found.add(package)
            folder = SRC.parent.joinpath(*package.split("."))
            found |= {f"{package}.{a.name}" for a in node.names if (folder / f"{a.name}.py").is_file()}
    return found


def _private_stage_module(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 2 and parts[0] == "usema" and parts[1] in STAGES


def test_bench_and_analysis_use_the_public_api():
    """bench/ and analysis/ sit on top: they use usema's public face (usema.train, usema.planning.Plans,
    usema.models, usema.nn, ...), and a private stage module only where the allow-list says why."""
    files = sorted(p for folder in ("bench", "analysis") for p in (SRC / folder).rglob("*.py"))
    assert len(files) > 10
    used = {
        (path.relative_to(SRC).as_posix(), module)
        for path in files
        for module in _imported_modules(path)
        if _private_stage_module(module)
    }
    assert sorted(used - ALLOWED_PRIVATE_IMPORTS) == []
    assert sorted(ALLOWED_PRIVATE_IMPORTS - used) == []  # the allow-list names no import that is gone
