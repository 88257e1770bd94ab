"""Data-processing aspect, input level: modality composition and modality generation."""
