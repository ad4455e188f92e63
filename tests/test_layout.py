"""Tests mirror the tree: every module src/usema/<path>/<module>.py has tests/<path>/test_<module>.py, and every
test file is named after a module beside which it sits (test_<module>.py or test_<module>_<subject>.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, TESTS = ROOT / "src" / "usema", ROOT / "tests"

# Modules with nothing of their own to test: package docstrings and re-exports, and `python -m` entry points.
# A package __init__ that defines something (usema, usema.cli, usema.integrations.nnunet) is tested in
# test_init.py.
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
    "training/__init__.py",
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
