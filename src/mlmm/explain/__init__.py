"""Modality contribution (``mlmm explain``): Shapley values of modalities for a trained model."""

from .contribution import Contributions, modality_contributions, value_table
from .shapley import harsanyi_dividends, interaction_index, permutation_shapley, shapley_values

__all__ = ["Contributions", "modality_contributions", "value_table", "shapley_values", "interaction_index",
           "harsanyi_dividends", "permutation_shapley"]
