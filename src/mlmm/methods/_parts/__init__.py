"""Shared building blocks of methods (never registered themselves)."""
