"""The package's shape (ARCHITECTURE.md): layers that point one way, no cycles, no private names crossing modules, no
function too long to read, modules importable by their names, and a command line that starts without torch."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import vaekit

PACKAGE = Path(vaekit.__file__).resolve().parent
MODULES = sorted(m.name for m in pkgutil.walk_packages(vaekit.__path__, "vaekit.") if m.name != "vaekit.__main__")
MAX_FUNCTION_LINES = 80  # statements of a function, its docstring not counted


def _sources() -> list[tuple[str, ast.Module]]:
    trees = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        trees.append((name, ast.parse(path.read_text(), str(path))))
    return trees


def _imports(tree: ast.Module, module: str) -> list[tuple[str, str]]:
    """(imported module, imported name or "") of every import in a module, function-level ones included."""
    found = []
    package = module if module == "vaekit" or (PACKAGE.parent / Path(*module.split(".")) / "__init__.py").exists() \
        else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found += [(base, alias.name) for alias in node.names]
    return found


def test_import_linter_contracts_are_kept() -> None:
    """Layers, no cycles between sibling modules, no use of the compatibility paths (see pyproject.toml)."""
    result = subprocess.run(["lint-imports"], capture_output=True, text=True, cwd=PACKAGE.parents[1])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_no_private_names_cross_modules() -> None:
    """A name starting with _ is imported only from inside the module that defines it (never across modules)."""
    offenders = []
    for module, tree in _sources():
        for source, name in _imports(tree, module):
            if source.startswith("vaekit") and name.startswith("_") and name != "__version__" and source != module:
                offenders.append(f"{module} imports {source}.{name}")
    assert offenders == []


def test_no_module_imports_the_package_root() -> None:
    """Nothing inside the package imports ``vaekit`` itself, which would import every layer (and cycle)."""
    offenders = []
    for module, tree in _sources():
        for source, name in _imports(tree, module):
            if source == "vaekit" and name and not (PACKAGE / name).is_dir() and not (PACKAGE / f"{name}.py").exists():
                offenders.append(f"{module}: from vaekit import {name}")
            if source == "vaekit" and not name and module != "vaekit":
                offenders.append(f"{module}: import vaekit")
    assert offenders == []


def test_no_function_is_too_long_to_read() -> None:
    long = []
    for module, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                docstring = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
                start = first.end_lineno + 1 if docstring and len(node.body) > 1 else node.lineno  # type: ignore[operator]
                lines = node.end_lineno - start + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert long == []


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_by_its_name(module: str) -> None:
    """No module is shadowed: ``import vaekit.x.y`` gives the module, whatever the package root exports."""
    imported = importlib.import_module(module)
    assert imported.__name__ == module


def test_public_names_are_the_functions_and_modules_keep_their_names() -> None:
    import vaekit.apps.sampling
    import vaekit.training.loop

    assert callable(vaekit.train) and callable(vaekit.sample) and callable(vaekit.evaluate)
    assert vaekit.training.loop.train is vaekit.train
    assert vaekit.apps.sampling.sample is vaekit.sample
    for name in vaekit.__all__:
        assert getattr(vaekit, name) is not None
    from vaekit.estimators import AnomalyDetector  # the documented compatibility paths
    from vaekit.quality import fid

    assert AnomalyDetector is vaekit.AnomalyDetector and callable(fid)


def test_import_and_help_do_not_load_torch() -> None:
    """`import vaekit` and building the whole CLI parser stay light, so `vaekit --help` is instant."""
    code = (
        "import sys, vaekit\n"
        "from vaekit.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
