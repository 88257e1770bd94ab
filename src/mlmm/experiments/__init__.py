"""Committed experiment specs (YAML package data): ``mlmm reproduce NAME`` runs one.

This folder is the single source of truth; the repository's ``experiments/``
is a symbolic link to it, so an installed wheel ships exactly the specs the
repository shows.
"""
