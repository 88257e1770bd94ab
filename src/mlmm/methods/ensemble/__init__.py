"""Ensembles (survey category 10): combine per-modality or per-member predictions so a
missing modality drops out (late averaging, evidential combination, gated branches, deep ensembles)."""
