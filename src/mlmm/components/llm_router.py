"""A language-model router for ``pattern-router``: prompt in, expert name out.

Nothing here loads a model: ``make_llm_router(generate)`` wraps any text generator
(a local LLM pipeline, an API client the caller owns, a fake in tests) into the
router callable ``(pattern, experts) -> expert name`` that ``PatternRouter.router``
accepts. The method checks the answer: an unknown or infeasible name is ignored
and the rule-based choice is used instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

#: What ``PatternRouter`` passes a router: the present modalities, and one dict per expert.
Router = Callable[[tuple[str, ...], list[dict]], str]


def routing_prompt(pattern: tuple[str, ...], experts: Sequence[dict]) -> str:
    """The prompt for one availability pattern: present modalities, then one line per expert
    (name, feasibility, what it needs, validation accuracy on this pattern, relative compute)."""
    lines = [
        "Pick the model to use for inputs on which only these modalities are available: "
        + (", ".join(pattern) or "(none)") + ".",
        "Candidate models (name | feasible | needs | validation accuracy on this pattern (samples) | compute):",
    ]
    for e in experts:
        acc = "n/a" if e.get("val_accuracy") is None else f"{e['val_accuracy']:.3f} ({e['val_count']})"
        needs = ", ".join(e["requires"]) or "any one modality"
        lines.append(f"- {e['name']} | {'yes' if e['feasible'] else 'no'} | {needs} | {acc} | {e['cost']:.2f}")
    lines.append("Answer with the name of one feasible model only.")
    return "\n".join(lines)


def make_llm_router(generate: Callable[[str], str]) -> Router:
    """A router that asks ``generate(prompt) -> reply`` and returns the first expert name the
    reply mentions (at one position the longest name wins, so ``only:ab`` is not read as ``only:a``); an
    empty string when it names none (the method then falls back to its rule)."""

    def route(pattern: tuple[str, ...], experts: list[dict]) -> str:
        reply = generate(routing_prompt(pattern, experts))
        hits = [(m.start(), -len(e["name"]), e["name"]) for e in experts
                for m in [re.search(re.escape(e["name"]), reply)] if m]
        return min(hits)[2] if hits else ""

    return route
