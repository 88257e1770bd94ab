"""The benchmark engine: YAML spec -> grid of cells -> backend (in-process, process pool, Ray) -> SQLite store.

One cell = (dataset, method + parameters, scenario, seed) = one ``mlmm.experiment.run_seed`` call.
``mlmm bench SPEC.yaml`` and ``mlmm reproduce NAME`` are the command-line faces of ``run_bench``.
"""

from .catalog import find_spec, packaged_specs
from .grid import Cell, expand, scenario_label
from .runner import BenchOutcome, CellFailed, MaskMismatch, run_bench
from .spec import BenchSpec, SpecError, apply_overrides, load_spec, parse_spec, spec_hash
from .store import ResultStore, load_cells, load_specs, open_store
from .tables import comparison_table, summarise_cells, summary_table

__all__ = [
    "BenchOutcome", "BenchSpec", "Cell", "CellFailed", "MaskMismatch", "ResultStore", "SpecError",
    "apply_overrides", "comparison_table", "expand", "find_spec", "load_cells", "load_spec", "load_specs",
    "open_store", "packaged_specs", "parse_spec", "run_bench", "scenario_label", "spec_hash", "summarise_cells",
    "summary_table",
]
