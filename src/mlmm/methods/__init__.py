"""All methods. Importing this package registers every method in ``METHODS``.

Layout: ``methods/<category>/<registry_name>.py``, one registered method per file,
the folder one of the 12 ``CATEGORIES`` (``-`` written ``_``). Every module under a
category folder is imported here, so a new method only needs its own file with
``@register_method``; shared building blocks live in ``mlmm.components``.
"""

import importlib
import pkgutil

from .base import CATEGORIES, MethodInfo, MissingModalityModel, Output
from .registry import METHODS, register_method


def _import_all_method_modules() -> None:
    for module in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        if any(part.startswith("_") for part in module.name.split(".")[2:]):
            continue  # private modules register nothing
        importlib.import_module(module.name)


_import_all_method_modules()

__all__ = ["CATEGORIES", "METHODS", "MethodInfo", "MissingModalityModel", "Output", "register_method"]
