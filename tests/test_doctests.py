"""The examples in the public docstrings run and give what they show (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

#: Modules whose public docstrings carry examples.
MODULES = ["mlmm.registry", "mlmm.missing.functional", "mlmm.data.spec"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (doctest output above)"
