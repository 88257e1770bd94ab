"""Read the cells a report is made of: a results database of ``mlmm bench`` or a JSON / JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

_SQLITE_HEADER = b"SQLite format 3\x00"


def load_results(path: str | Path, spec: str | None = None) -> tuple[list[dict], dict[str, str | None]]:
    """(cells, spec name -> reference method) of the results at ``path``.

    ``path`` is the SQLite database ``mlmm bench`` writes (read with
    ``mlmm.bench.store.load_cells`` / ``load_specs``), or a JSON file holding a list of
    cells (or ``{"cells": [...]}``), or JSONL with one cell per line. A cell is the
    store's key fields merged with a ``run_seed`` record (see ``mlmm.metrics.robustness``).
    ``spec`` keeps one spec's cells. Errors name the file (and line).
    """
    p = Path(path)
    if not p.is_file():
        raise OSError(f"results file {str(path)!r} does not exist")
    with open(p, "rb") as f:
        is_sqlite = f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    if is_sqlite:
        from ..bench.store import load_cells, load_specs

        cells = load_cells(p, spec)
        references = {s["name"]: s.get("reference") for s in load_specs(p)}
    else:
        cells, references = _read_json(p), {}
        if spec is not None:
            cells = [c for c in cells if c.get("spec") == spec]
    if not cells:
        raise ValueError(f"no cells in {str(path)!r}" + (f" for spec {spec!r}" if spec else ""))
    return cells, references


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {i} is not JSON ({err.msg})") from None
    if isinstance(data, dict):
        data = data.get("cells", [data])
    if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
        raise ValueError(f"{path}: expected a list of cell objects (or JSONL, one per line)")
    return data


def load_failed_cells(path: str | Path, spec: str | None = None) -> list[dict]:
    """Cells recorded as failed in an ``mlmm bench`` database (``[]`` for a JSON / JSONL file)."""
    p = Path(path)
    with open(p, "rb") as f:
        if f.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            return []
    from ..bench.store import load_failures

    return load_failures(p, spec)
