"""Task metrics (scikit-learn underneath) and evaluation over modality subsets."""

from .task import classification_metrics, summarise_seeds

__all__ = ["classification_metrics", "summarise_seeds"]
