"""Coordinated representation (survey category 3): align the modality embeddings in one
space with a pairwise loss masked to co-present modalities (``infonce-align``, ``dcca-align``)."""
