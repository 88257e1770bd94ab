"""``mlmm datasets``, ``mlmm methods``, ``mlmm protocols``: what is registered."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..data.registry import dataset_infos
from ..methods import METHODS
from ..missing import protocol_infos


def method_names(selected: Sequence[str] | None) -> list[str]:
    names = list(selected) if selected else METHODS.names()
    for name in names:
        METHODS.get(name)  # unknown -> UnknownNameError listing the known ones
    return names


def cmd_listing(args: argparse.Namespace) -> None:
    from ..report import format_table

    if args.command == "datasets":
        infos = dataset_infos()
        rows = [[d["name"], d.get("n_samples", "-"), d.get("modalities", "-"), d.get("description", "")] for d in infos]
        header = ["dataset", "samples", "modalities", "description"]
    elif args.command == "methods":
        infos = [{"name": n, **METHODS.get(n).info.as_dict(), "module": METHODS.get(n).__module__}
                 for n in METHODS.names()]
        rows = [[d["name"], d["category"], d["fusion"], ", ".join(d["capabilities"]) or "-",
                 ", ".join(d["unsupported_kinds"]) or "-", d["module"].removeprefix("mlmm.methods.")]
                for d in infos]
        # Capabilities are the declared ones (mlmm.Capability; recovers = recovers missing modalities).
        header = ["method", "category", "fusion", "capabilities", "does not take", "module (mlmm.methods.)"]
        # Why a method does not take a kind or a user encoder, below the table (too long for a cell).
        notes = [f"{d['name']} does not take {kind}: {why}" for d in infos
                 for kind, why in d["unsupported_kinds"].items()]
        notes += [f"{d['name']} keeps its own encoders for {'all' if kind == '*' else kind} modalities: {why}"
                  for d in infos for kind, why in d["fixed_encoders"].items()]
        notes += [f"{d['name']} takes at most {d['split_row_limit']:,} rows of a streamed (memory-mapped) split: "
                  f"{d['split_limit_reason']}" for d in infos if d["split_row_limit"] is not None]
    else:
        infos = protocol_infos()
        rows = [[d["name"], d["definition"]] for d in infos]
        header = ["protocol", "definition"]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
    else:
        print(format_table(header, [[_short(c) for c in row] for row in rows]))
        if args.command == "methods" and notes:
            print("\n" + "\n".join(notes))


def _short(value: object, width: int = 110) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
