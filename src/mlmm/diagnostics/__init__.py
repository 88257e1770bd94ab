"""Diagnostics beyond accuracy: recover-or-not (``recovery``) and uncertainty under
missingness (``uncertainty``); ``fitting`` trains the cells they inspect."""

from .fitting import Cell, CellConfig, fit_cell

__all__ = ["Cell", "CellConfig", "fit_cell"]
