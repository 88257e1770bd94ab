"""Model combinations: ensembles, dedicated training, schedulers."""
