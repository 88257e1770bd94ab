"""All methods. Importing this package registers every method in ``METHODS``."""

from .base import CATEGORIES, MethodInfo, MissingModalityModel, Output
from .registry import METHODS, register_method
from .imputation import fill as _fill  # noqa: F401  (registers)
from .imputation import retrieval_fill as _retrieval_fill  # noqa: F401
from .representation import composition as _composition  # noqa: F401
from .representation import pooling as _pooling  # noqa: F401
from .representation import retrieval as _retrieval  # noqa: F401
from .representation import coordinated as _coordinated  # noqa: F401
from .combination import ensemble as _ensemble  # noqa: F401

__all__ = ["CATEGORIES", "METHODS", "MethodInfo", "MissingModalityModel", "Output", "register_method"]
