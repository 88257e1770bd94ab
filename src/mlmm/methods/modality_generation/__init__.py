"""Modality generation (survey category 2, data processing at the input level).

A generator produces the missing modality itself, x̂_m, in the (standardised)
input space; the downstream model reads the present inputs, the generated ones
(stop-gradient) in the missing slots, and the availability mask. Two designs:

- ``individual-generators`` (individual_generators.py): one generator per target modality,
  conditioned on the masked mean of the other present modalities' encodings;
- ``masked-autoencoder-fill`` (masked_autoencoder_fill.py): one unified masked
  autoencoder over all modalities that generates every missing one from
  whatever is present.

Both train their generators inside the method, by hiding random present
modalities and reconstructing them (so incomplete training data suffices);
the shared downstream and training policy live in ``mlmm.components.generated_fill``.
"""
