"""Discrete schedulers: route each sample to one expert by its availability pattern."""
