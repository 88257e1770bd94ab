"""Loaders for data the user brings (nothing is downloaded): tables, arrays, UEA .ts files,
MMSA sentiment pickles, MultiBench AV-MNIST arrays, and a mapping file that names one of them.

Every loader returns a ``MultimodalDataset`` with the natural availability mask and the
file's own splits where the format has them; bad files raise errors naming the file.
"""

from ._build import KindInferredWarning
from ._files import KNOWN_SHA256, UnknownFileVersionWarning, check_known
from .avmnist import load_avmnist
from .mmsa import load_mmsa
from .table import load_arrays, load_table
from .ts import load_ts, read_ts
from .user_data import load_data_file, register_data_file

__all__ = ["KNOWN_SHA256", "KindInferredWarning", "UnknownFileVersionWarning", "check_known", "load_arrays",
           "load_avmnist", "load_data_file", "load_mmsa", "load_table", "load_ts", "read_ts", "register_data_file"]
