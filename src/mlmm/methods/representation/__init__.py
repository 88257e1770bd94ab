"""Data-processing aspect, representation level: coordinated, composition, generation."""
