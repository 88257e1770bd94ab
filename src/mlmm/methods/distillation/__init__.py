"""Distillation methods (survey category 7): a teacher that sees more modalities guides a
student that sees fewer — a full-modality teacher, an EMA self-teacher, or ShaSpec's
shared features standing in for missing specific ones."""
