"""Attention-based methods (survey category 6): a transformer over one token per modality,
where a missing modality is a learned [MISS_m] token or a masked-out key."""
