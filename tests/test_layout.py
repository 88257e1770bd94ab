"""The source layout rules of ARCHITECTURE.md, checked on the files and the import graph.

- a folder under ``mlmm/methods`` is one of the 12 categories (``-`` written ``_``);
- a registered method lives in ``methods/<its category>/<its registry name>.py`` and no
  module registers two methods (every module of a category folder registers exactly one);
- no module outside ``mlmm.cli`` imports ``mlmm.cli``; ``argparse`` appears only in ``mlmm.cli``;
- ``mlmm.metrics`` does not import ``mlmm.train``;
- no module imports a private (underscore) module of another top-level package.

Imports under ``if TYPE_CHECKING:`` are annotations only and are not edges of the graph.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import mlmm
from mlmm.cli import main
from mlmm.methods import CATEGORIES, METHODS

SRC = Path(mlmm.__file__).resolve().parent
METHODS_DIR = SRC / "methods"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imports_of(path: Path) -> set[str]:
    """Absolute dotted names a module imports at run time (``from a import b`` gives both
    ``a`` and ``a.b``: b may be a submodule)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


SOURCES = sorted(SRC.rglob("*.py"))
GRAPH = {_module_name(p): imports_of(p) for p in SOURCES}


def _touches(imported: set[str], target: str) -> list[str]:
    return sorted(i for i in imported if i == target or i.startswith(target + "."))


def test_the_import_scan_sees_relative_imports() -> None:
    # cli.main imports its sibling modules relatively: the scan must resolve them
    assert "mlmm.cli.common" in GRAPH["mlmm.cli.main"]
    assert "mlmm.methods.base" in GRAPH["mlmm.components.encode_pool"]


def test_every_folder_under_methods_is_a_category() -> None:
    folders = {p.name for p in METHODS_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= {c.replace("-", "_") for c in CATEGORIES}, folders - {c.replace("-", "_") for c in CATEGORIES}


@pytest.mark.parametrize("name", METHODS.names())
def test_a_registered_method_lives_in_its_category_folder_under_its_name(name: str) -> None:
    cls = METHODS.get(name)
    expected = f"mlmm.methods.{cls.info.category.replace('-', '_')}.{name.replace('-', '_')}"
    assert cls.__module__ == expected


def test_every_method_file_registers_exactly_one_method() -> None:
    per_module: dict[str, list[str]] = {}
    for name in METHODS.names():
        per_module.setdefault(METHODS.get(name).__module__, []).append(name)
    files = {_module_name(p) for p in METHODS_DIR.glob("*/*.py") if p.name != "__init__.py"}
    assert {m: n for m, n in per_module.items() if len(n) > 1} == {}
    assert files - set(per_module) == set(), "a file under a category folder that registers no method"


def test_no_registered_method_subclasses_another() -> None:
    classes = {METHODS.get(n) for n in METHODS.names()}
    for cls in classes:
        parents = {base for base in cls.__mro__[1:] if base in classes}
        assert not parents, f"{cls.__name__} subclasses registered {[p.__name__ for p in parents]}"


def test_no_library_module_imports_the_cli() -> None:
    offenders = {m: _touches(i, "mlmm.cli") for m, i in GRAPH.items()
                 if not (m == "mlmm.cli" or m.startswith("mlmm.cli.")) and _touches(i, "mlmm.cli")}
    assert offenders == {}


def test_argparse_only_in_the_cli() -> None:
    offenders = [m for m, i in GRAPH.items() if "argparse" in i and not m.startswith("mlmm.cli")]
    assert offenders == []


def test_metrics_does_not_import_train() -> None:
    offenders = {m: _touches(i, "mlmm.train") for m, i in GRAPH.items()
                 if m.startswith("mlmm.metrics") and _touches(i, "mlmm.train")}
    assert offenders == {}


def _top_package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])  # mlmm.<package>


def test_no_module_imports_a_private_module_of_another_package() -> None:
    offenders = []
    for module, imported in GRAPH.items():
        for name in imported:
            if not name.startswith("mlmm."):
                continue
            private = any(part.startswith("_") and part != "__init__" for part in name.split(".")[1:])
            if private and _top_package(name) != _top_package(module) and name in GRAPH:
                offenders.append((module, name))
    assert offenders == []


def test_mlmm_methods_shows_each_methods_module(capsys) -> None:
    assert main(["methods", "--json"]) == 0
    infos = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert infos["tmc"]["module"] == "mlmm.methods.ensemble.tmc"
    assert infos.keys() == set(METHODS.names())
    assert main(["methods"]) == 0
    assert "ensemble.tmc" in capsys.readouterr().out
