"""The committed experiment specs and how ``mlmm reproduce NAME`` finds one.

The single source of truth is the package folder ``src/mlmm/experiments/``
(package data, so an installed wheel carries the specs); the repository's
``experiments/`` is a symbolic link to it, so the specs are where a reader of
the repository looks for them and can never drift from what is shipped.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..safe_yaml import read_text_file

__all__ = ["find_spec", "packaged_specs"]


def packaged_specs() -> dict[str, str]:
    """name -> YAML text of every spec shipped in ``mlmm.experiments``."""
    folder = resources.files("mlmm.experiments")
    return {entry.name.removesuffix(".yaml"): entry.read_text()
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")}


def find_spec(name: str) -> tuple[str, str]:
    """(YAML text, where it came from) for ``name``: a path to a spec file, else ``./experiments/NAME.yaml``,
    else the spec of that name shipped with mlmm. Unknown names list the shipped ones."""
    candidates = [Path(name), Path("experiments") / f"{name}.yaml"]
    for path in candidates:
        if path.suffix in (".yaml", ".yml") and path.exists():
            return read_text_file(path, "spec"), str(path)
    shipped = packaged_specs()
    if name in shipped:
        return shipped[name], f"mlmm/experiments/{name}.yaml"
    raise ValueError(f"unknown experiment {name!r}; shipped: {', '.join(shipped)} (or give a path to a spec file)")
