"""The ``mlmm`` command line (the only place argparse lives; no library package imports it).

``main`` is the console script's entry point; ``python -m mlmm.cli`` runs it too.
"""

from .common import UsageError, parse_floats, parse_params, parse_seeds
from .main import build_parser, main

__all__ = ["UsageError", "build_parser", "main", "parse_floats", "parse_params", "parse_seeds"]
