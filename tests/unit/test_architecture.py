"""The lab sits beside production, not under it: no production module imports nixfleet.lab.

The lab is a target (nixfleet/lab/target.py) found by its entry point; it imports production
code, never the reverse. Production here is every Python file of the project except the lab
itself (nixfleet/lab/, nix/lab/), the tests and the benchmarks (lab tools).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = "nixfleet.lab"
NOT_PRODUCTION = {("nixfleet", "lab"), ("nix", "lab"), ("tests",), ("benchmarks",)}


def production_files(root: Path = ROOT) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p == "__pycache__" or p.endswith(".egg-info")
               for p in parts):
            continue
        if any(parts[:len(prefix)] == prefix for prefix in NOT_PRODUCTION):
            continue
        yield path


def _is_lab(module: str) -> bool:
    return module == LAB or module.startswith(LAB + ".")


def _package(relative: Path) -> list[str]:
    """The package a file's relative imports start from."""
    return list(relative.parent.parts)


def lab_imports(source: str, relative: Path = Path("nixfleet/module.py")) -> list[int]:
    """Lines of `source` that import the lab: import nixfleet.lab[.x], from nixfleet.lab[.x]
    import ..., from nixfleet import lab, their relative forms, and importlib.import_module /
    __import__ of such a name; at any depth (inside functions too)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(_is_lab(alias.name) for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package(relative)
                base = package[:len(package) - node.level + 1] if node.level <= len(package) \
                    else []
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]
            if _is_lab(module) or any(_is_lab(name) for name in names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str) and _is_lab(first.value):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_production_module_imports_the_lab():
    found = [f"{path.relative_to(ROOT)}:{line}"
             for path in production_files()
             for line in lab_imports(path.read_text(encoding="utf-8"), path.relative_to(ROOT))]
    assert not found, "production code imports nixfleet.lab (the lab must be found through " \
                      "its entry point, nixfleet.target): " + ", ".join(found)


def test_the_walker_reads_the_production_tree():
    files = {str(p.relative_to(ROOT)) for p in production_files()}
    assert {"nixfleet/inventory.py", "nixfleet/target.py", "inventory.py",
            "operations/nixos.py", "deploys/switch.py"} <= files
    assert not any(f.startswith(("nixfleet/lab/", "tests/", "benchmarks/", "nix/lab/"))
                   for f in files)


def test_the_check_finds_every_form_of_a_lab_import():
    source = (
        "import os\n"
        "import nixfleet.lab\n"
        "import nixfleet.lab.target as t\n"
        "from nixfleet.lab.config import lab_paths\n"
        "from nixfleet import lab\n"
        "def f():\n"
        "    from nixfleet.lab import machine\n"
        "from . import lab\n"
        "from .lab.target import LabTarget\n"
        "importlib.import_module('nixfleet.lab.target')\n"
        "__import__('nixfleet.lab')\n"
    )
    assert lab_imports(source, Path("nixfleet/cli.py")) == [2, 3, 4, 5, 7, 8, 9, 10, 11]


def test_the_check_leaves_other_imports_alone():
    source = (
        "import nixfleet.labels\n"
        "from nixfleet import inventory, target\n"
        "from nixfleet.laboratory import x\n"
        "from .lab import y\n"  # nixfleet/secrets/lab, not nixfleet.lab
        "from . import lab\n"
        "importlib.import_module(name)\n"
    )
    assert lab_imports(source, Path("nixfleet/secrets/cli.py")) == []
