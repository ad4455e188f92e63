"""The planning package: the device plan and its estimate live in planning, which imports nothing from training
(the estimate times the trainer through the timer its caller passes); `usema.planning.plan_dataset` is a
deprecated alias of the planner."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import usema.planning
from usema.planning import planner

PLANNING = Path(usema.planning.__file__).parent


def _imported_modules(source: Path) -> set[str]:
    """Every module an `import` or `from ... import` of `source` names, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_planning_module_imports_training_even_inside_a_function():
    modules = sorted(PLANNING.glob("*.py"))
    assert {"device.py", "estimate.py", "planner.py"} <= {m.name for m in modules}
    climbs = {
        f"{module.name}: {name}"
        for module in modules
        for name in _imported_modules(module)
        if name == "usema.training" or name.startswith("usema.training.")
    }
    assert climbs == set()


def test_planning_for_a_device_loads_no_training_module(tmp_path):
    code = f"""
import importlib, pkgutil, sys
import usema.planning
from usema.data.phantoms import make_phantom_dataset
for module in pkgutil.walk_packages(usema.planning.__path__, "usema.planning."):
    importlib.import_module(module.name)
data = make_phantom_dataset({str(tmp_path / "data")!r}, spatial_dims=2, num_cases=4, shape=(24, 20), seed=0)
usema.planning.plan_for_device(data, {str(tmp_path / "run")!r}, "cpu")
print(sorted(name for name in sys.modules if name.startswith("usema.training")))
"""
    src = str(PLANNING.parents[1])  # this checkout's usema, whatever the environment installs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "plans.json").is_file()


def test_plan_dataset_of_the_package_is_the_planner_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match=r"usema.planning.plan_dataset is deprecated.*usema\.plan"):
        from usema.planning import plan_dataset
    assert plan_dataset is planner.plan_dataset
    assert "plan_dataset" not in usema.planning.__all__ and "plan_for_device" in usema.planning.__all__
    with pytest.raises(AttributeError, match="no attribute 'plan_anything'"):
        usema.planning.plan_anything  # noqa: B018
