"""Dedicated training (survey category 11): parameters specific to each availability
pattern — small adapters on a shared backbone, or one independent model per pattern
(the "oracle" reference) — trained by sampling sub-patterns of what each sample holds."""
