"""Graph learning: relate samples (or modalities) by a similarity graph and propagate over it."""
