"""The method registry: ``@register_method("name")`` on a ``MissingModalityModel`` subclass."""

from __future__ import annotations

from ..registry import Registry
from .base import MissingModalityModel

METHODS: Registry[type[MissingModalityModel]] = Registry("method")


def register_method(name: str):
    def decorate(cls: type[MissingModalityModel]) -> type[MissingModalityModel]:
        if not hasattr(cls, "info"):
            raise TypeError(f"method {name!r} ({cls.__name__}) has no MethodInfo in `info`")
        METHODS.register(name)(cls)
        cls.method_name = name  # only once registered: a refused class keeps no name
        return cls

    return decorate
