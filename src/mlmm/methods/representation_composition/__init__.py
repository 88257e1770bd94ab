"""Representation composition (survey category 4): pool the embeddings of the present
modalities (mean, max, sign-max, with auxiliary heads, retrieved embeddings) — and, for
sequences with time-level masks (``Batch.time_mask``), pool over observed steps only
(``masked-temporal-pool``) or run a causal recurrence fed one step at a time (``streaming-gru``)."""
