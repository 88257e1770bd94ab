"""Missingness: pure mask functions, registered protocols, and train/val/test scenarios.

Every rate word means one thing (see PROTOCOLS.md): ``entry`` is the fraction
of missing (sample, modality) entries, ``sample`` the fraction of incomplete
samples. Masks are (n, M) bool arrays, True = present.
"""

from .functional import (
    all_subsets,
    entry_rate_mask,
    fixed_subset_mask,
    label_mnar_class_rates,
    label_mnar_mask,
    mask_checksum,
    max_entry_rate,
    per_modality_mask,
    realised_missingness,
    sample_rate_mask,
    subset_name,
)
from .protocols import (
    PROTOCOLS,
    Complete,
    EntryRate,
    FixedSubset,
    LabelMNAR,
    MissingnessProtocol,
    PerModality,
    SampleRate,
    make_protocol,
    protocol_infos,
    register_protocol,
)
from .scenario import ROLE_ID, ROLES, Scenario
from .temporal import Asynchronous, Burst, Catastrophic, Systematic, TimeMaskProtocol

__all__ = [
    "PROTOCOLS",
    "ROLES",
    "ROLE_ID",
    "Asynchronous",
    "Burst",
    "Catastrophic",
    "Complete",
    "EntryRate",
    "FixedSubset",
    "LabelMNAR",
    "MissingnessProtocol",
    "PerModality",
    "SampleRate",
    "Scenario",
    "Systematic",
    "TimeMaskProtocol",
    "all_subsets",
    "entry_rate_mask",
    "fixed_subset_mask",
    "label_mnar_class_rates",
    "label_mnar_mask",
    "make_protocol",
    "mask_checksum",
    "max_entry_rate",
    "per_modality_mask",
    "protocol_infos",
    "realised_missingness",
    "register_protocol",
    "sample_rate_mask",
    "subset_name",
]
