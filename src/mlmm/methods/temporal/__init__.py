"""Methods that read time-level masks of sequence modalities (``Batch.time_mask``).

``masked-temporal-pool`` pools over observed steps only, ``frame-repeat``
carries the last observed step forward, ``streaming-gru`` runs a causal
recurrence that can be fed one step at a time. Every other method sees the
(B, M) mask and zeros at unobserved steps (``mlmm.data.timemask``).
"""
